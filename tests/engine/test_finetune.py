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
    from mmguard.registry import VICTIMS

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
