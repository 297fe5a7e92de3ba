"""Shared fits: which probes leave a fit as it is, that such a fit really is the same computation, and that the
Runner reads it back (in its own run and from another run folder) instead of fitting again."""
import dataclasses
import json

import pytest
import torch

from mmguard.config.recipe import load_recipe
from mmguard.config.spec import ProbeSpec
from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine import runner as runner_module
from mmguard.engine.finetune import finetune, quiet_lightning
from mmguard.engine.fitkey import fit_hash, probe_plan
from mmguard.engine.runner import Runner
from mmguard.models import build_model

RECIPE = """
name: shared
data: {name: synthetic, types: [colour], n_train: 8, n_test: 6, size: 32}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 8}]
attacks: [{name: random}]
probes: [{name: none}, {name: mix, fraction: 0.5}, {name: question_strip}, {name: case}]
eval: {zero_shot: false, max_new_tokens: 2}
trainer: {progress_bar: false}
logger: {name: none}
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "shared.yaml"
    path.write_text(RECIPE)
    return load_recipe(path)


def key(spec, probe, train):
    return fit_hash(spec, spec.victims[0], train, probe_plan(spec, probe, train, train))


def test_which_probes_share_the_fit_of_another(spec):
    train = generate(8, seed=0, types=("colour",))
    keys = {p.label: key(spec, p, train) for p in spec.probes}
    assert keys["none"] is not None and keys["mix"] == keys["question_strip"] == keys["none"]
    assert keys["case"] not in (None, keys["none"])  # lower-cased questions: another fit
    blur = key(spec, ProbeSpec(name="blur", label="blur"), train)
    assert blur not in (None, keys["none"])  # blurred pixels: another fit ...
    combo = ProbeSpec(name="blur_whitespace", label="blur_whitespace")
    assert key(spec, combo, train) == blur  # ... which tidy text adds nothing to
    for name in ("rcp", "ueraser"):  # random stages re-drawn every epoch, or a training-step augmentation
        assert key(spec, ProbeSpec(name=name, label=name), train) is None
    assert key(dataclasses.replace(spec, seed=1), spec.probes[0], train) != keys["none"]
    assert key(spec, spec.probes[0], generate(8, seed=1, types=("colour",))) != keys["none"]


def test_fit_level_probes_and_per_epoch_evaluation_key_their_fits(spec):
    train = generate(8, seed=0, types=("colour",))
    none = key(spec, spec.probes[0], train)
    stop = key(spec, ProbeSpec("early_stop", "early_stop", {"fraction": 0.25, "split": "clean", "patience": None}),
               train)
    later = key(spec, ProbeSpec("early_stop", "early_stop", {"fraction": 0.25, "split": "clean", "patience": 2}),
                train)
    isolate = key(spec, ProbeSpec("isolate", "isolate", {"fraction": 0.25, "epochs": 1, "restart": False}), train)
    assert len({none, stop, later, isolate}) == 4 and None not in {stop, later, isolate}
    watched = dataclasses.replace(spec, eval=dataclasses.replace(spec.eval, per_epoch=True))
    assert key(watched, spec.probes[0], train) != none  # its rows carry the epochs: another row
    assert "per_epoch" not in spec.eval.key() and watched.eval.key()["per_epoch"] is True  # off: the keys of before


def test_a_probe_that_leaves_the_clean_set_as_it_is_fits_the_same_weights():
    """The premise of sharing: fine-tuning through mix (clean with itself) or question_strip on clean data gives
    exactly the weights of fine-tuning through no probe."""
    train = generate(16, seed=0, types=("colour",))
    params = FinetuneParams(epochs=1, lr=3e-3, batch_size=8)

    def fit(probe):
        adapter = build_model("tiny-llava", seed=3)
        with quiet_lightning():
            finetune(adapter, VICTIMS.build("full"), params, train, seed=0, probe=probe, clean=train)
        return adapter.model.state_dict()

    none = fit(None)
    for probe in (PROBES.build("mix", fraction=0.5), PROBES.build("question_strip")):
        weights = fit(probe)
        assert all(torch.equal(none[k], weights[k]) for k in none), probe.name
    changed = fit(PROBES.build("case"))
    assert not all(torch.equal(none[k], changed[k]) for k in none)  # the comparison can fail


def test_the_runner_reads_a_shared_fit_back(spec, tmp_path, monkeypatch):
    fits = []
    real = Runner.fit_and_eval

    def counting(self, v, train, test, row_name, **kw):
        fits.append(row_name)
        return real(self, v, train, test, row_name, **kw)

    monkeypatch.setattr(runner_module.Runner, "fit_and_eval", counting)
    res = Runner(spec, str(tmp_path / "first")).run()
    # random noise carries no trigger: question_strip leaves the protected set as it is too; mix does not
    assert fits == [f"{row}__tiny-llava/full__{probe}" for row, probe in [
        ("clean", "none"), ("random", "none"), ("random", "mix"), ("clean", "case"), ("random", "case")]]
    rows = {(r["attack"], r["probe"]): r for r in res["rows"]}
    preds = tmp_path / "first" / "predictions"
    for row, probe in [("clean", "mix"), ("clean", "question_strip"), ("random", "question_strip")]:
        shared, source = rows[(row, probe)], rows[(row, "none")]
        assert shared["accuracy"] == source["accuracy"] and shared["seconds"] == 0
        assert shared["fit_hash"] == source["fit_hash"] and f"read back from {row}__tiny-llava/full__none" in \
            shared["note"]
        assert (preds / f"{row}__tiny-llava_full__{probe}.jsonl").read_text() == \
            (preds / f"{row}__tiny-llava_full__none.jsonl").read_text()
    assert rows[("random", "question_strip")]["delta_acc"] == \
        rows[("clean", "question_strip")]["accuracy"] - rows[("random", "question_strip")]["accuracy"]
    assert rows[("random", "mix")]["seconds"] > 0 and "note" not in rows[("random", "mix")]
    assert rows[("clean", "case")]["seconds"] > 0 and "note" not in rows[("clean", "case")]

    # another run folder, the probe axis without none: the fits are read from the first run's folder (the
    # release too; a release made again is other files, so its fits are made again)
    fits.clear()
    only_strip = dataclasses.replace(spec, probes=[spec.probes[2]])
    second = Runner(only_strip, str(tmp_path / "second"), reuse=[tmp_path / "first", tmp_path / "first" / "protected"]
                    ).run()
    assert fits == [] and {r["attack"]: r["accuracy"] for r in second["rows"]} == {
        "clean": rows[("clean", "none")]["accuracy"], "random": rows[("random", "none")]["accuracy"]}
    # without the folder to read from, it fits
    Runner(only_strip, str(tmp_path / "third")).run()
    assert fits == ["clean__tiny-llava/full__question_strip", "random__tiny-llava/full__question_strip"]
    assert all(r["seconds"] > 0 for r in json.loads((tmp_path / "third" / "results.json").read_text())["rows"])
