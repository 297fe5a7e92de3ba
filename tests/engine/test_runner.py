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


REUSE = """
name: reuse
data: {name: synthetic, types: [colour], n_train: 8, n_test: 4, size: 32}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 8}]
attacks: [{name: em_image, R: 1, P: 1, Q: 0}]
eval: {zero_shot: false, max_new_tokens: 2}
trainer: {progress_bar: false}
logger: {name: none}
"""


def test_a_release_from_another_run_stands_in_for_protecting_again(tmp_path, monkeypatch):
    """``reuse``: a release made for the same attack spec and samples is read, not recomputed (the protect step
    is never called); one for another spec (a different seed) is not taken."""
    import mmguard.engine.runner as runner_module

    path = tmp_path / "reuse.yaml"
    path.write_text(REUSE)
    first = Runner(load_recipe(path), str(tmp_path / "first")).run()
    release = tmp_path / "first" / "protected"

    def refuse(*args, **kwargs):
        raise AssertionError("protected again")

    monkeypatch.setattr(runner_module, "protect", refuse)
    runner = Runner(load_recipe(path), str(tmp_path / "second"), reuse=[release])
    second = runner.run()
    assert not (tmp_path / "second" / "protected").exists()
    assert runner.protected["em_image"].path == release / "em_image"
    pick = lambda res: {(r["attack"], r["probe"]): r["accuracy"] for r in res["rows"]}  # noqa: E731
    assert pick(second) == pick(first)
    other = Runner(load_recipe(path, ["seed=1"]), str(tmp_path / "third"), reuse=[release])
    try:
        other.run()
    except AssertionError as err:
        assert "protected again" in str(err)
    else:
        raise AssertionError("a release of another seed was taken")
