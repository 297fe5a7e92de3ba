"""A victim fine-tune through the Lightning engine really learns, and evaluation scores by generation."""
import pytest
import torch
from helpers import CPU as TRAINER

from mmguard.attacks.losses import l_train
from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.data import TrainCollator
from mmguard.engine.finetune import evaluate, finetune
from mmguard.engine.steps import AdversarialStep, MaxOverCopies, StandardStep
from mmguard.engine.victim_module import VictimModule
from mmguard.models import build_model


def fit(adapter, train, name="full", seed=0, probe=None, **params):
    """Fine-tune with FinetuneParams (lr 2e-3, 8 epochs, batch 32, warm-up 0.05 unless given)."""
    params = {"lr": 2e-3, "warmup_ratio": 0.05, "epochs": 8, "batch_size": 32, **params}
    own = {"rank": 8, "alpha": 16, "dropout": 0.0} if name != "full" else {}
    return finetune(adapter, VICTIMS.build(name, **own), FinetuneParams(**params), train, seed=seed,
                    trainer=TRAINER, probe=probe)


def token_loss(adapter, batch, pixels=None):
    return l_train(adapter.forward({**batch, **(pixels or {})}), batch["labels"], reduction="token_mean")


def test_finetune_learns_held_out_synthetic_to_090():
    train = generate(400, seed=1, types=("colour",), prefix="tr")
    test = generate(100, seed=2, types=("colour",), prefix="te")
    adapter = build_model("tiny-llava", seed=0)
    before = evaluate(adapter, test, max_new_tokens=4, trainer=TRAINER)["accuracy"]
    fit(adapter, train, epochs=12)
    result = evaluate(adapter, test, max_new_tokens=4, trainer=TRAINER)
    assert before < 0.4
    assert result["accuracy"] >= 0.9, result["predictions"][:5]
    assert len(result["predictions"]) == 100 and {"id", "prediction", "answer", "correct"} <= set(
        result["predictions"][0])


def test_finetune_is_deterministic():
    train = generate(32, seed=1, types=("colour",))
    outs = []
    for _ in range(2):
        adapter = build_model("tiny-llava", seed=0)
        fit(adapter, train, seed=3, epochs=1, batch_size=16)
        outs.append(next(adapter.model.parameters()).detach().clone())
    assert (outs[0] - outs[1]).abs().max() == 0


@pytest.mark.parametrize("grad_accum", [2])
def test_grad_accumulation_and_schedule_run(grad_accum):
    train = generate(16, seed=1, types=("colour",))
    adapter = build_model("tiny-llava", seed=0)
    module = fit(adapter, train, name="lora", epochs=1, batch_size=4, grad_accum=grad_accum)
    assert module.trainer.global_step == 2  # 4 batches / accumulation 2


def test_adversarial_training_perturbs_inside_the_loop():
    """adv_eps/adv_steps: PGD on the raw images each step raises the batch loss within the budget, and the
    fine-tune runs through the engine."""
    samples = generate(8, seed=1, types=("colour",))
    adapter = build_model("tiny-llava", seed=0)
    step = AdversarialStep(8 / 255, 3)
    module = VictimModule(adapter, VICTIMS.build("full"), step=step)
    batch = TrainCollator(adapter, keep_raw=True)(samples)
    with torch.no_grad():
        clean_loss = float(token_loss(adapter, batch))
        adv_loss = float(token_loss(adapter, batch, step.pixels(module, batch)))
    assert adv_loss > clean_loss
    module = fit(adapter, samples, epochs=1, batch_size=4, adv_eps=8 / 255, adv_steps=2)
    assert isinstance(module.step, AdversarialStep) and module.step.steps == 2


def test_ueraser_loss_is_the_max_over_copies():
    """The training step's loss is the batch mean of each sample's largest loss over its augmented copies,
    checked by hand: each copy of each sample through the model alone."""
    samples = generate(4, seed=1, types=("colour", "count"), size=32)
    adapter = build_model("tiny-llava", seed=0)
    adapter.model.eval()  # no dropout: the hand computation must see the same function
    probe = PROBES.build("ueraser", copies=3)
    step = MaxOverCopies(probe, StandardStep(), seed=5)
    module = VictimModule(adapter, VICTIMS.build("full"), step=step)
    batch = TrainCollator(adapter, keep_raw=True)(samples)
    with torch.no_grad():
        per_copy = step.per_copy_losses(module, batch, step.copies(batch["raw_images"], torch.Generator().manual_seed(11)))
        copies = probe.augment_copies(torch.stack([s.pixels() for s in samples]), torch.Generator().manual_seed(11))
        hand = torch.zeros(3, 4)
        for k in range(3):
            for i, s in enumerate(samples):
                one = TrainCollator(adapter)([s])
                one.update(adapter.process([copies[k, i]]))
                hand[k, i] = token_loss(adapter, one)
    assert torch.allclose(per_copy, hand, atol=1e-5)
    assert per_copy.max(0).values.mean() > hand.mean() and not torch.equal(copies[0], copies[1])
    # training_step uses it, with the step's own seeded generator (seed, epoch, batch index)
    with torch.no_grad():
        step_loss = module.training_step(batch, 3)
        again = step.per_copy_losses(module, batch, step.copies(batch["raw_images"], step.generator(0, 3))).max(0).values.mean()
        other = step.per_copy_losses(module, batch, step.copies(batch["raw_images"], step.generator(0, 4))).max(0).values.mean()
    assert torch.allclose(step_loss, again) and not torch.allclose(again, other)


def test_ueraser_step_trains_on_each_samples_worst_copy_with_the_max_gradient():
    """The step scores the copies without a graph and back-propagates through each sample's worst copy only:
    the same loss and the same parameter gradient as back-propagating through the max over every copy."""
    samples = generate(4, seed=1, types=("colour", "count"), size=32)
    adapter = build_model("tiny-llava", seed=0)
    adapter.model.eval()
    step = MaxOverCopies(PROBES.build("ueraser", copies=3), StandardStep(), seed=5)
    module = VictimModule(adapter, VICTIMS.build("full"), step=step)
    batch = TrainCollator(adapter, keep_raw=True)(samples)
    params = [p for p in adapter.model.parameters() if p.requires_grad]

    fast = step(module, batch, 3)
    fast_grads = torch.autograd.grad(fast, params, allow_unused=True)
    full = step.per_copy_losses(module, batch, step.copies(batch["raw_images"], step.generator(0, 3))).max(0).values.mean()
    full_grads = torch.autograd.grad(full, params, allow_unused=True)
    assert torch.allclose(fast, full, atol=1e-6)
    pairs = [(a, b) for a, b in zip(fast_grads, full_grads) if a is not None or b is not None]
    assert pairs and all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in pairs)


def test_ueraser_max_loss_trains():
    """Fine-tuning with probe ueraser (max loss over 2 copies each step) lowers that loss and learns."""
    train = generate(64, seed=1, types=("colour",), prefix="tr")
    adapter = build_model("tiny-llava", seed=0)
    batch = TrainCollator(adapter, keep_raw=True)(train[:16])
    step = MaxOverCopies(PROBES.build("ueraser", copies=2), StandardStep(), seed=0)

    def max_loss():
        module = VictimModule(adapter, _Frozen(), step=step)
        adapter.model.eval()
        with torch.no_grad():
            return float(step.per_copy_losses(module, batch, step.copies(batch["raw_images"], torch.Generator().manual_seed(0))).max(0).values.mean())

    before = max_loss()
    module = fit(adapter, train, epochs=4, batch_size=16, lr=3e-3, probe=PROBES.build("ueraser", copies=2))
    assert isinstance(module.step, MaxOverCopies) and module.step.probe.copies == 2
    assert max_loss() < 0.7 * before


class _Frozen:
    def prepare(self, adapter):
        return []


@pytest.mark.parametrize("name", ["full", "lora"])
def test_watching_the_test_set_every_epoch_changes_no_number(name):
    """eval.per_epoch: the test set scored after each epoch, the fit itself untouched (LoRA's dropout draws too)."""
    from mmguard.config.sections import EvalParams

    train = generate(32, seed=1, types=("colour",))
    test = generate(8, seed=2, types=("colour",), prefix="te")
    weights, modules = [], []
    for watch in (None, test):
        adapter = build_model("tiny-llava", seed=0)
        own = {"rank": 4, "alpha": 8, "dropout": 0.1} if name == "lora" else {}
        modules.append(finetune(adapter, VICTIMS.build(name, **own), FinetuneParams(epochs=2, lr=3e-3, batch_size=8),
                                train, seed=3, trainer=TRAINER, watch=watch, evaluation=EvalParams(max_new_tokens=2)))
        weights.append(adapter.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert modules[0].record == {} and len(modules[1].record["epoch_accuracy"]) == 2
