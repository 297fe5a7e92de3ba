"""The seed axis inside one run: ``seeds: [0, 1]`` runs the recipe once per seed (each seed a resumable run
folder of its own), every seed the recipe leaves open follows it, and the results give mean +- std over seeds."""
import json
from pathlib import Path

import pytest

from mmguard.cli import main
from mmguard.config.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """name: seeds
seeds: [0, 1]
data: {name: synthetic, types: [colour], n_train: 8, n_test: 4}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 4},
          {name: full, model: tiny-gemma3, pretrained: false, seed: 7, epochs: 1, batch_size: 4}]
attacks: [{name: random}]
eval: {zero_shot: false, max_new_tokens: 2}
trainer: {progress_bar: false}
logger: {name: none}
"""


def test_seed_axis_resolves_each_seed(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text(RECIPE)
    spec = load_recipe(path)
    assert spec.seeds == [0, 1]
    one = spec.at_seed(1)
    assert one.seed == 1 and one.seeds is None
    assert one.victims[0].model.seed == 1 and one.victims[1].model.seed == 7  # open seeds follow, pinned stay
    assert one.attacks[0].seed == 1 and one.attacks[0].surrogates[0].seed == 1
    with pytest.raises(Exception, match="seeds"):
        load_recipe(path, ["seeds=[1,1]"])


@pytest.mark.slow
def test_seed_axis_runs_every_seed_and_reports_mean_and_std(tmp_path, capsys):
    path = tmp_path / "seeds.yaml"
    path.write_text(RECIPE.replace("tiny-gemma3", "tiny-llava-wide"))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--no-report"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete" and res["seeds"] == [0, 1]
    assert sorted({(r["attack"], r["seed"]) for r in res["rows"]}) == [("clean", 0), ("clean", 1), ("random", 0),
                                                                        ("random", 1)]
    for seed in (0, 1):
        sub = json.loads((out / f"seed-{seed}" / "results.json").read_text())
        assert sub["seed"] == seed and sub["status"] == "complete"
    assert "± " in (out / "results.md").read_text() and "| 2 |" in (out / "results.md").read_text()
    capsys.readouterr()
    assert main(["collect", str(out), "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    random = [r for r in table["rows"] if r["attack"] == "random"]
    assert all(r["n"] == 2 and r["seeds"] == [0, 1] for r in random)
    assert main(["report", str(out), "--no-attention"]) == 0  # error bars over the seeds; seed 0's images
    assert (out / "figures" / "accuracy__tiny-llava_full.png").is_file() and (out / "figures" / "grid__random.png").is_file()
