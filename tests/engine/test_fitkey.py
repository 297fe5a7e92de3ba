"""Shared clean fits: which probes leave the clean fit as it is, that such a fit really is the same computation,
and that the Runner reads it back (in its own run and from another run folder) instead of fitting again."""
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
from mmguard.engine.fitkey import clean_fit_hash
from mmguard.engine.runner import Runner
from mmguard.models import build_model

RECIPE = """
name: shared
data: {name: synthetic, types: [colour], n_train: 8, n_test: 6, size: 32}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 8}]
attacks: []
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


def test_which_probes_share_the_clean_fit_of_none(spec):
    train = generate(8, seed=0, types=("colour",))
    v = spec.victims[0]
    key = {p.label: clean_fit_hash(spec, v, p, train) for p in spec.probes}
    assert key["none"] is not None and key["mix"] == key["question_strip"] == key["none"]
    assert key["case"] not in (None, key["none"])  # lower-cased questions: another fit
    for name in ("jpeg", "rcp", "ueraser", "blur"):  # pixels change, or the probe acts during training
        assert clean_fit_hash(spec, v, ProbeSpec(name=name, label=name), train) is None
    assert clean_fit_hash(dataclasses.replace(spec, seed=1), v, spec.probes[0], train) != key["none"]
    assert clean_fit_hash(spec, v, spec.probes[0], generate(8, seed=1, types=("colour",))) != key["none"]


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


def test_the_runner_reads_a_shared_clean_fit_back(spec, tmp_path, monkeypatch):
    fits = []
    real = Runner.fit_and_eval

    def counting(self, v, train, test, row_name, **kw):
        fits.append(row_name)
        return real(self, v, train, test, row_name, **kw)

    monkeypatch.setattr(runner_module.Runner, "fit_and_eval", counting)
    res = Runner(spec, str(tmp_path / "first")).run()
    assert fits == ["clean__tiny-llava/full__none", "clean__tiny-llava/full__case"]
    rows = {r["probe"]: r for r in res["rows"]}
    for label in ("mix", "question_strip"):
        assert rows[label]["accuracy"] == rows["none"]["accuracy"] and rows[label]["seconds"] == 0
        assert rows[label]["fit_hash"] == rows["none"]["fit_hash"] and "'none'" in rows[label]["note"]
        preds = tmp_path / "first" / "predictions"
        assert (preds / f"clean__tiny-llava_full__{label}.jsonl").read_text() == \
            (preds / "clean__tiny-llava_full__none.jsonl").read_text()
    assert rows["case"]["seconds"] > 0 and "note" not in rows["case"]

    # another run folder, the probe axis without none: the fit is read from the first run's folder
    fits.clear()
    only_mix = dataclasses.replace(spec, probes=[spec.probes[1]])
    second = Runner(only_mix, str(tmp_path / "second"), reuse=[tmp_path / "first"]).run()
    assert fits == [] and second["rows"][0]["accuracy"] == rows["none"]["accuracy"]
    # without the folder to read from, it fits
    Runner(only_mix, str(tmp_path / "third")).run()
    assert fits == ["clean__tiny-llava/full__mix"]
    assert json.loads((tmp_path / "third" / "results.json").read_text())["rows"][0]["seconds"] > 0
