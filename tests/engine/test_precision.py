"""Precision and memory levers of the protection loop: mixed precision, micro-batches with accumulated gradients,
gradient checkpointing, and a surrogate's own dtype, each giving the result it should."""
import torch
from helpers import attack_spec, protect_to, stepping

from mmguard.data.synthetic import generate

FAST = {"R": 1, "P": 3, "Q": 0, "top_k": 4, "verify_k": 2, "eps_t": 2, "batch_size": 6, "init": "zero"}


def one_step(tmp_path, **keys):
    samples = generate(6, seed=5, types=("colour",))
    module = stepping(attack_spec("mmguard_bph", each={**FAST, **keys}), samples, tmp_path)
    module.training_step([s.id for s in samples], 0)
    return torch.stack(module.deltas(samples, 1)), [module.triggers[s.id] for s in samples]


def test_micro_batches_accumulate_to_the_full_batch(tmp_path):
    full, full_triggers = one_step(tmp_path / "full")
    micro, micro_triggers = one_step(tmp_path / "micro", micro_batch_size=2)
    # per-sample gradients do not depend on the batch beyond padding: the same sign steps almost everywhere
    assert (full == micro).float().mean() > 0.99 and full.abs().max() > 0
    assert micro_triggers == full_triggers


def test_gradient_checkpointing_gives_the_same_steps(tmp_path):
    plain, _ = one_step(tmp_path / "plain")
    recomputed, _ = one_step(tmp_path / "ckpt", gradient_checkpointing=True)
    assert (plain == recomputed).float().mean() > 0.99


def test_bf16_mixed_precision_and_a_bf16_surrogate_protect_within_budget(tmp_path):
    samples = generate(4, seed=5, types=("colour",))
    spec = attack_spec("mmguard_bph", each={**FAST, "Q": 1, "precision": "bf16-mixed"})
    ps = protect_to(spec, samples, tmp_path / "mixed")
    assert 0 < ps.summary["linf_max_255"] <= 8 and all(r["trigger"] for r in ps.per_sample)
    spec = attack_spec("em_image", each=FAST)
    spec.surrogates[0].dtype = "bfloat16"
    from mmguard.engine.build import build_model

    assert next(build_model(spec.surrogates[0]).model.parameters()).dtype == torch.bfloat16
    ps = protect_to(spec, samples, tmp_path / "bf16")
    assert 0 < ps.summary["linf_max_255"] <= 8
