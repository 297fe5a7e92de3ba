"""A victim fine-tune through the Lightning engine really learns, and evaluation scores by generation."""
from types import SimpleNamespace

import pytest

from mmguard.data.synthetic import generate
from mmguard.engine.finetune import evaluate, finetune
from mmguard.models import build_model

TRAINER = SimpleNamespace(accelerator="cpu", devices=1, strategy="auto", num_nodes=1, progress_bar=False,
                          deterministic=True)


def victim(**kw):
    base = dict(name="full", rank=8, alpha=16, dropout=0.0, lr=2e-3, weight_decay=0.0, warmup_ratio=0.05,
                epochs=8, batch_size=32, grad_accum=1, precision="32-true")
    base.update(kw)
    return SimpleNamespace(**base)


def test_finetune_learns_held_out_synthetic_to_090():
    train = generate(400, seed=1, types=("colour",), prefix="tr")
    test = generate(100, seed=2, types=("colour",), prefix="te")
    adapter = build_model("tiny-llava", seed=0)
    before = evaluate(adapter, test, max_new_tokens=4, trainer_cfg=TRAINER)["accuracy"]
    finetune(adapter, victim(epochs=12), train, seed=0, trainer_cfg=TRAINER)
    result = evaluate(adapter, test, max_new_tokens=4, trainer_cfg=TRAINER)
    assert before < 0.4
    assert result["accuracy"] >= 0.9, result["predictions"][:5]
    assert len(result["predictions"]) == 100 and {"id", "prediction", "answer", "correct"} <= set(
        result["predictions"][0])


def test_finetune_is_deterministic():
    train = generate(32, seed=1, types=("colour",))
    outs = []
    for _ in range(2):
        adapter = build_model("tiny-llava", seed=0)
        finetune(adapter, victim(epochs=1, batch_size=16), train, seed=3, trainer_cfg=TRAINER)
        outs.append(next(adapter.model.parameters()).detach().clone())
    assert (outs[0] - outs[1]).abs().max() == 0


@pytest.mark.parametrize("grad_accum", [2])
def test_grad_accumulation_and_schedule_run(grad_accum):
    train = generate(16, seed=1, types=("colour",))
    adapter = build_model("tiny-llava", seed=0)
    module = finetune(adapter, victim(name="lora", epochs=1, batch_size=4, grad_accum=grad_accum), train,
                      seed=0, trainer_cfg=TRAINER)
    assert module.trainer.global_step == 2  # 4 batches / accumulation 2


def test_adversarial_training_perturbs_inside_the_loop():
    """adv_eps/adv_steps: PGD on the raw images each step raises the batch loss within the budget, and the
    fine-tune runs through the engine."""
    import torch

    from mmguard.engine.data import TrainCollator
    from mmguard.engine.victim_module import VictimModule, answer_token_loss
    from mmguard.core.registry import VICTIMS

    samples = generate(8, seed=1, types=("colour",))
    adapter = build_model("tiny-llava", seed=0)
    module = VictimModule(adapter, VICTIMS.build("full"), adv_eps=8 / 255, adv_steps=3)
    batch = TrainCollator(adapter, keep_raw=True)(samples)
    with torch.no_grad():
        clean_loss = float(answer_token_loss(adapter.forward(batch), batch["labels"]))
        adv_loss = float(answer_token_loss(adapter.forward({**batch, **module.adversarial_pixels(batch)}),
                                           batch["labels"]))
    assert adv_loss > clean_loss
    finetune(adapter, victim(epochs=1, batch_size=4, adv_eps="8/255", adv_steps=2), samples, seed=0,
             trainer_cfg=TRAINER)


def test_ueraser_loss_is_the_max_over_copies():
    """The training step's loss is the batch mean of each sample's largest loss over its augmented copies,
    checked by hand: each copy of each sample through the model alone."""
    import torch

    from mmguard.engine.data import TrainCollator
    from mmguard.engine.victim_module import VictimModule, answer_token_loss
    from mmguard.core.registry import PROBES, VICTIMS

    samples = generate(4, seed=1, types=("colour", "count"), size=32)
    adapter = build_model("tiny-llava", seed=0)
    adapter.model.eval()  # no dropout: the hand computation must see the same function
    probe = PROBES.build("ueraser", copies=3)
    module = VictimModule(adapter, VICTIMS.build("full"), augment=probe, seed=5)
    batch = TrainCollator(adapter, keep_raw=True)(samples)
    with torch.no_grad():
        loss, per_copy = module.max_loss(batch, torch.Generator().manual_seed(11))
        copies = probe.augment_copies(torch.stack([s.pixels() for s in samples]), torch.Generator().manual_seed(11))
        hand = torch.zeros(3, 4)
        for k in range(3):
            for i, s in enumerate(samples):
                one = TrainCollator(adapter)([s])
                one.update(adapter.process([copies[k, i]]))
                hand[k, i] = answer_token_loss(adapter.forward(one), one["labels"])
    assert torch.allclose(per_copy, hand, atol=1e-5)
    assert torch.allclose(loss, hand.max(0).values.mean(), atol=1e-6)
    assert loss > hand.mean() and not torch.equal(copies[0], copies[1])
    # training_step uses it, with the step's own seeded generator (seed, epoch, batch index)
    with torch.no_grad():
        step_loss = module.training_step(batch, 3)
        again, _ = module.max_loss(batch, module.step_generator(3))
        other, _ = module.max_loss(batch, module.step_generator(4))
    assert torch.allclose(step_loss, again) and not torch.allclose(again, other)


def test_ueraser_max_loss_trains():
    """Fine-tuning with probe ueraser (max loss over 2 copies each step) lowers that loss and learns."""
    import torch

    from mmguard.engine.data import TrainCollator
    from mmguard.engine.victim_module import VictimModule
    from mmguard.core.registry import PROBES

    train = generate(64, seed=1, types=("colour",), prefix="tr")
    adapter = build_model("tiny-llava", seed=0)
    batch = TrainCollator(adapter, keep_raw=True)(train[:16])

    def max_loss():
        m = VictimModule(adapter, _Frozen(), augment=PROBES.build("ueraser", copies=2))
        adapter.model.eval()
        with torch.no_grad():
            return float(m.max_loss(batch, torch.Generator().manual_seed(0))[0])

    before = max_loss()
    module = finetune(adapter, victim(epochs=4, batch_size=16, lr=3e-3), train, seed=0, trainer_cfg=TRAINER,
                      probe={"name": "ueraser", "copies": 2})
    assert module.augment is not None and module.augment.copies == 2
    assert max_loss() < 0.7 * before


class _Frozen:
    def prepare(self, adapter):
        return []
