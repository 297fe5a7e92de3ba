"""The Runner: the fine-tuning-recipe axis, per-victim probe lists, a victim that cannot run here."""
import torch

from mmguard.engine.runner import Runner
from mmguard.config.recipe import load_recipe

RECIPE = """
name: axis
data: {name: synthetic, types: [colour], n_train: 8, n_test: 4, size: 32}
victims: [{name: lora, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 8}]
victim_recipes: [lora, {name: dora, probes: [none]}, {name: qlora, probes: [none]}]
attacks: [{name: random}]
probes: [{name: none}, {name: rcp}]
eval: {zero_shot: false, max_new_tokens: 2}
trainer: {progress_bar: false}
logger: {name: none}
"""


def test_axis_rows_and_qlora_skip_note(tmp_path):
    path = tmp_path / "axis.yaml"
    path.write_text(RECIPE)
    res = Runner(load_recipe(path), str(tmp_path / "run")).run()
    cells = {(r["attack"], r["victim"], r["probe"]): r for r in res["rows"]}
    assert set(cells) == {(a, v, p) for a in ("clean", "random") for v, p in
                          [("tiny-llava/lora", "none"), ("tiny-llava/lora", "rcp"), ("tiny-llava/dora", "none"),
                           ("tiny-llava/qlora", "none")]}
    for key, r in cells.items():
        if key[1] == "tiny-llava/qlora":
            if torch.cuda.is_available():
                continue
            assert r["accuracy"] is None and r["delta_acc"] is None and "qlora" in r["note"]
        else:
            assert 0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0 and "note" not in r
    random = cells[("random", "tiny-llava/lora", "rcp")]
    assert random["delta_acc"] == cells[("clean", "tiny-llava/lora", "rcp")]["accuracy"] - random["accuracy"]
    assert random["psnr"] is not None and random["ssim"] is not None
    assert len(list((tmp_path / "run" / "protected").iterdir())) == 1  # computed once, reused
