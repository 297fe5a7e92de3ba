"""The seed axis inside one run: ``seeds: [0, 1]`` runs the recipe once per seed (each seed a resumable run
folder of its own), every seed the recipe leaves open follows it (the data draw included), and the results give
mean +- std over seeds and say what the seeds varied."""
import json
from pathlib import Path

import pytest
import torch

from mmguard.cli import _spec, build_parser, main
from mmguard.config.recipe import load_recipe
from mmguard.config.seeds import seed_note
from mmguard.config.tree import at_seed
from mmguard.engine.preflight import load_data

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
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
    one = at_seed(spec, 1)
    assert one.seed == 1 and one.seeds is None
    assert one.victims[0].model.seed == 1 and one.victims[1].model.seed == 7  # open seeds follow, pinned stay
    assert one.attacks[0].seed == 1 and one.attacks[0].surrogates[0].seed == 1
    assert one.data.params["seed"] == 1 and at_seed(spec, 0).data.params["seed"] == 0  # the data draw too
    assert at_seed(load_recipe(path, ["data.seed=0"]), 1).data.params["seed"] == 0  # a pinned one stays
    with pytest.raises(Exception, match="seeds"):
        load_recipe(path, ["seeds=[1,1]"])


def _same_images(a, b):
    assert [s.id for s in a] == [s.id for s in b]
    return [torch.equal(x.pixels(), y.pixels()) for x, y in zip(a, b)]


def test_two_seeds_of_the_quickstart_draw_different_training_images():
    def train(*overrides):  # as `mmguard run recipes/quickstart.yaml seed=S` resolves and loads it
        return load_data(_spec(build_parser().parse_args(["run", str(RECIPES / "quickstart.yaml"), *overrides])).data)[
            "train"]

    same = _same_images(train("seed=0"), train("seed=1"))
    assert len(same) == 400 and sum(same) < 10
    assert all(_same_images(train("seed=0"), train("seed=1", "data.seed=0")))


@pytest.mark.parametrize("recipe", ["threat/whitebox.yaml", "threat/graybox.yaml", "threat/blackbox.yaml",
                                    "ablation/binding.yaml", "ablation/scrub.yaml"])
def test_the_benchmarks_recipes_keep_their_data_at_every_seed(recipe):
    """Their committed tables were measured on data seed 0 at every seed: the recipes pin it."""
    spec = load_recipe(RECIPES / recipe)
    at = (lambda s: at_seed(spec, s)) if spec.seeds else (lambda s: load_recipe(RECIPES / recipe, [f"seed={s}"]))
    assert {at(s).data.params["seed"] for s in (0, 1, 2)} == {0}


def test_file_data_draw_their_subsample_and_split_from_the_seed():
    digits = {"name": "llava_json", "train": str(ROOT / "tests/fixtures/digits/train/data.json"), "limit": 20}
    tree = {"data": {**digits, "test_fraction": 0.25, "test": None}, "attacks": []}
    from mmguard.config.spec import resolve

    ids = {s: [x.id for x in load_data(resolve({**tree, "seed": s}).data)["train"]] for s in (0, 1)}
    position = {e["id"]: k for k, e in enumerate(json.loads(Path(digits["train"]).read_text()))}
    assert len(ids[0]) == len(ids[1]) == 20 and ids[0] != ids[1]
    assert ids[0] == sorted(ids[0], key=position.get)  # kept in file order
    pinned = {**tree, "data": {**tree["data"], "seed": 0}}
    assert [x.id for x in load_data(resolve({**pinned, "seed": 1}).data)["train"]] == ids[0]


def test_seed_note_says_what_follows_and_what_is_pinned(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text(RECIPE)
    spec = load_recipe(path)
    note = seed_note(at_seed(spec, 0), at_seed(spec, 1))
    assert note.startswith("Seeds vary the data draw; the initialization of tiny-llava; the attacks' draws")
    assert note.endswith("Fixed: tiny-gemma3's initialization (seed 7).")
    quick = [load_recipe(RECIPES / "threat" / "whitebox.yaml", [f"seed={s}"]) for s in (0, 1)]
    note = seed_note(*quick)
    assert "the data draw" not in note and "the data (seed 0)" in note
    assert "tiny-llava's initialization (seed 6)" in note
    assert "LoRA initialization" in note and "tiny-llava's pre-trained twin (seed 6)" in note


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
    assert res["seeds_vary"].startswith("Seeds vary the data draw")
    assert res["seeds_vary"] in (out / "results.md").read_text()
    capsys.readouterr()
    assert main(["collect", str(out), "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)
    random = [r for r in table["rows"] if r["attack"] == "random"]
    assert all(r["n"] == 2 and r["seeds"] == [0, 1] for r in random) and table["seeds_vary"] == res["seeds_vary"]
    assert main(["report", str(out), "--no-attention"]) == 0  # error bars over the seeds; seed 0's images
    assert (out / "figures" / "accuracy__tiny-llava_full.png").is_file() and (out / "figures" / "grid__random.png").is_file()
