"""``early_stop``: a held-out split validated after every epoch, the best epoch's weights kept, and the row that says
which epoch and what it scored."""
import json

import lightning as L
import pytest
import torch
from helpers import CPU

from mmguard.config.recipe import load_recipe
from mmguard.config.sections import EvalParams, FinetuneParams
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.finetune import evaluate, finetune
from mmguard.engine.runner import Runner
from mmguard.models import build_model

EVAL = EvalParams(max_new_tokens=3)
PARAMS = FinetuneParams(epochs=6, lr=1e-2, batch_size=8)  # learns the colours within a few epochs


@pytest.fixture(scope="module")
def clean():
    return generate(96, seed=1, types=("colour",), prefix="tr")


@pytest.fixture(scope="module")
def protected(clean):
    return [s.replace(question=s.question + " willow") for s in clean]


def test_the_held_out_split(clean, protected):
    probe = PROBES.build("early_stop", fraction=0.1)
    plan = probe.plan(protected, clean, seed=0)
    held = [s.id for s in plan.val]
    assert len(held) == 10 and len(plan.samples) == 86  # 9.6 rounds to 10
    assert not set(held) & {s.id for s in plan.samples}
    assert all(s.question.endswith("willow") for s in plan.samples)
    assert [s.question for s in plan.val] == ["What colour is the shape?"] * 10  # split: clean, matched by id
    again = probe.plan(protected[::-1], clean, seed=0)
    assert sorted(s.id for s in again.val) == sorted(held)  # the seed and the ids decide, not the order
    assert {s.id for s in probe.plan(protected, clean, seed=1).val} != set(held)
    mine = PROBES.build("early_stop", fraction=0.1, split="protected").plan(protected, None, seed=0)
    assert [s.id for s in mine.val] == held and all(s.question.endswith("willow") for s in mine.val)
    assert len(PROBES.build("early_stop", fraction=0.01).plan(protected[:3], clean, seed=0).val) == 1
    assert len(PROBES.build("early_stop", fraction=0.9).plan(protected[:3], clean, seed=0).samples) == 1


class Scramble(L.Callback):
    """Replaces every weight by noise at the start of epoch ``at`` (0-based): the epochs from there on validate
    far worse than the ones before, so the best epoch is known to be an earlier one."""

    def __init__(self, at):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in pl_module.trainable:
                    p.copy_(torch.randn(p.shape, generator=g))


def test_the_best_epoch_is_kept(clean):
    test = generate(24, seed=2, types=("colour",), prefix="te", balanced=True)
    adapter = build_model("tiny-llava", seed=0)
    plan = PROBES.build("early_stop", fraction=0.25).plan(clean, clean, seed=0)
    module = finetune(adapter, VICTIMS.build("full"), PARAMS, clean, seed=0, trainer=CPU, plan=plan, watch=test,
                      evaluation=EVAL, callbacks=[Scramble(4)])
    val, tests, record = module.epoch_accuracy["val"], module.epoch_accuracy["test"], module.record
    assert len(val) == len(tests) == 6
    assert max(val[:4]) > max(val[4:])  # the scramble at epoch 5 is seen
    assert record["best_epoch"] == val.index(max(val)) + 1 <= 4 and record["val_accuracy"] == max(val)
    # the weights put back are that epoch's: they score its validation and test accuracy again
    assert evaluate(adapter, plan.val, max_new_tokens=3, trainer=CPU)["accuracy"] == pytest.approx(max(val))
    assert evaluate(adapter, test, max_new_tokens=3, trainer=CPU)["accuracy"] == pytest.approx(
        tests[record["best_epoch"] - 1])
    assert record["peak_accuracy"] == max(tests) and record["epoch_accuracy"] == tests


def test_patience_stops_after_epochs_without_improvement(clean):
    adapter = build_model("tiny-llava", seed=0)
    module = finetune(adapter, VICTIMS.build("full"), PARAMS, clean, seed=0, trainer=CPU,
                      probe=PROBES.build("early_stop", fraction=0.25, patience=1), clean=clean, evaluation=EVAL,
                      callbacks=[Scramble(4)])
    record = module.record
    assert record["val_accuracy"] > 0 and record["best_epoch"] <= 4
    assert record["epochs_trained"] == record["best_epoch"] + 1 < PARAMS.epochs


RECIPE = """
name: early
data: {name: synthetic, types: [colour], n_train: 24, n_test: 8, size: 32}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 3, batch_size: 8}]
attacks: [{name: random}]
probes: [{name: none}, {name: early_stop, fraction: 0.25}]
eval: {zero_shot: false, max_new_tokens: 2, per_epoch: true}
trainer: {progress_bar: false}
logger: {name: none}
"""


def test_rows_carry_the_epoch_and_the_peak(tmp_path):
    path = tmp_path / "early.yaml"
    path.write_text(RECIPE)
    res = Runner(load_recipe(path), str(tmp_path / "run")).run()
    rows = {(r["attack"], r["probe"]): r for r in res["rows"]}
    for attack in ("clean", "random"):
        stopped, plain = rows[(attack, "early_stop")], rows[(attack, "none")]
        assert 1 <= stopped["best_epoch"] <= 3 and 0 <= stopped["val_accuracy"] <= 1
        assert "best_epoch" not in plain
        for r in (stopped, plain):  # eval.per_epoch: every row has its test accuracy after each epoch
            assert len(r["epoch_accuracy"]) == 3 and r["peak_accuracy"] == max(r["epoch_accuracy"])
            assert r["epoch_accuracy"][r["peak_epoch"] - 1] == r["peak_accuracy"]
        assert plain["accuracy"] == pytest.approx(plain["epoch_accuracy"][-1])  # the last epoch is the final model
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| peak_accuracy | best_epoch |" in table
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "complete"


class Kill(L.Callback):
    """Raises at the ``n``-th epoch start of the fine-tune (counted over its fits), as a killed job stops."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_train_epoch_start(self, trainer, pl_module):
        self.seen += 1
        if self.seen == self.n:
            raise RuntimeError("killed")


@pytest.mark.parametrize("spec", [{"name": "early_stop", "fraction": 0.25}, {"name": "isolate", "epochs": 1}])
def test_a_killed_fine_tune_resumes_to_the_same_weights_and_record(clean, tmp_path, spec):
    """The best epoch so far and the epochs' accuracies ride in the fit's checkpoints (isolate: both stages')."""
    test = generate(8, seed=2, types=("colour",), prefix="te")

    def run(folder, callbacks=()):
        adapter = build_model("tiny-llava", seed=0)
        probe = PROBES.build(spec["name"], **{k: v for k, v in spec.items() if k != "name"})
        module = finetune(adapter, VICTIMS.build("full"), FinetuneParams(epochs=3, lr=1e-2, batch_size=16), clean,
                          seed=0, trainer=CPU, probe=probe, clean=clean, watch=test, evaluation=EVAL,
                          checkpoint_dir=folder, callbacks=callbacks)
        return adapter.model.state_dict(), module.record

    whole, record = run(tmp_path / "whole")
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "cut", [Kill(3)])  # early_stop: in its third epoch; isolate: in the second of its own
    assert (tmp_path / "cut" / "last.ckpt").is_file()  # the epochs before the kill
    assert (tmp_path / "cut" / "isolate" / "last.ckpt").is_file() == (spec["name"] == "isolate")
    resumed, again = run(tmp_path / "cut")
    assert again == record and all(torch.equal(whole[k], resumed[k]) for k in whole)
