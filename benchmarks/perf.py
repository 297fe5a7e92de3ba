"""The framework's overhead, measured side by side in one run with the arms interleaved (same model, same batch):

(a) the protection loop's PGD step (``ProtectionModule.pgd``, em_image) against a hand-written PGD loop on the
    same LoRA-carrying surrogate and batch -- target ratio <= 1.10;
(b) the mmguard_bph PGD step against the em_image PGD step -- target ratio <= 1.25;
(c) a victim fine-tuning step through Lightning (``engine.finetune``) against a hand-written training loop with
    the same data path, optimizer and schedule -- target ratio <= 1.10;
(d) evaluation of 200 samples (``engine.finetune.evaluate``) against the evaluation it replaced (the uncached,
    equal-length-group greedy loop; ``tests/models/test_generate.py``) -- target: at least 3x faster; for a
    fine-tuned victim (one-word answers: the old loop made two full passes where the new one makes a prefill and
    one cached step, so about 2x is the ceiling there) and for a random-init one (answers of 8 tokens).

The hand-written arms compute what the framework computes (the LM head on the answer positions only, fused
AdamW with the framework's weight decay): the ratios measure the framework's own overhead. Each run checks it
(``agreement`` in the JSON): (a) the loss and its gradient in the pixels at delta 0, (c) every step's loss and
gradients; (d) asserts equal predictions; (b) compares two objectives, not one computation.

(a) and (b) at the tiny size and at a medium LLaVA (hidden 256, 4 layers, 96 px). Each arm is repeated and the
median taken; writes JSON beside this script.

    python benchmarks/perf.py                 # one CPU thread, a few minutes
    python benchmarks/perf.py --quick         # a smoke run
    python benchmarks/perf.py --device cuda --sizes 1b   # on a GPU, a 1B LLaVA in bf16, with MFU
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = {"tiny": {}, "medium": {"hidden": 256, "layers": 4, "image_size": 96},
         "1b": {"hidden": 2048, "layers": 16, "image_size": 336}}
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def tiny_llava(**sizes):
    """tiny-llava at its seed-0 initialization (``sizes``: its config at another size)."""
    from mmguard.config.spec import ModelSpec
    from mmguard.engine.build import build_model

    return build_model(ModelSpec("tiny-llava", pretrained=False, seed=0), **sizes)


def interleaved(arms: dict, repeats: int) -> dict:
    """Median seconds of each arm, the arms run in turn in every repeat (machine load hits all alike)."""
    times = {k: [] for k in arms}
    for _ in range(repeats):
        for k, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# -- (a), (b): the PGD step ------------------------------------------------------------------------------------
def protection(attack: str, samples, size: str, device: str, folder: Path, P: int):
    from mmguard.config.spec import resolve
    from mmguard.engine.protect import build_protection
    from mmguard.engine.state import StateDir

    spec = resolve({"attacks": [{"name": attack, "surrogates": [{"name": "tiny-llava", "pretrained": False}]}],
                    "each": {"attacks": {"P": P, "batch_size": len(samples), "init": "zero"}}}).attacks[0]
    surrogate = tiny_llava(**SIZES[size])
    surrogate.model.to(device)
    state = StateDir(folder)
    module = build_protection(spec, samples, state, surrogates=[surrogate])
    state.write_layout([s.id for s in samples], [module.shape(s) for s in samples], attack)
    module.start()
    state.deltas(1).create()
    return module


def hand_loss(adapter, tokens, clean, deltas):
    """l_train of ``clean + deltas`` and its gradient in the deltas, by hand: process, forward (the LM head on the
    answer positions only, as the framework does), l_train."""
    from mmguard.attacks.losses import l_train

    leaves = [d.detach().requires_grad_(True) for d in deltas]
    pixels = adapter.to_device(adapter.process([(x + d).clamp(0, 1) for x, d in zip(clean, leaves)]))
    loss = l_train(adapter.answer_logits({**tokens, **pixels}), reduction="none").mean()
    return loss, torch.autograd.grad(loss, leaves)


def hand_written_pgd(adapter, samples, P: int, eps: float = 8 / 255, alpha: float = 1 / 255):
    """The loop without the framework: encode once, then per step the loss and its gradient, and a sign step."""
    tokens = adapter.to_device(adapter.collate_tokens([adapter.encode(s) for s in samples]))
    clean = [s.pixels().to(adapter.device) for s in samples]
    deltas = [torch.zeros_like(x) for x in clean]

    def run():
        nonlocal deltas
        for _ in range(P):
            _, grads = hand_loss(adapter, tokens, clean, deltas)
            deltas = [((x + (d - alpha * g.sign()).clamp(-eps, eps)).clamp(0, 1) - x)
                      for x, d, g in zip(clean, deltas, grads)]
    return run


def pgd_agreement(module, samples) -> dict:
    """The framework's PGD objective (``ProtectionModule.l_prot``, as ``pgd`` sums it) against the hand-written
    arm's at delta 0 on the same surrogate and batch: the loss and each pixel's gradient (largest differences,
    the gradient's relative to its largest entry)."""
    adapter = module.surrogates[0]
    tokens = adapter.to_device(adapter.collate_tokens([adapter.encode(s) for s in samples]))
    clean = [s.pixels().to(adapter.device) for s in samples]
    loss, grads = hand_loss(adapter, tokens, clean, [torch.zeros_like(x) for x in clean])
    views = module.views(samples, [module.triggers.get(s.id) for s in samples], module.clean_passes(samples))
    leaves = [torch.zeros_like(x).requires_grad_(True) for x in clean]
    framework = module.l_prot(views, [(x + d).clamp(0, 1) for x, d in zip(clean, leaves)], leaves).sum() / len(samples)
    ours = torch.autograd.grad(framework, leaves)
    scale = max(float(g.abs().max()) for g in grads)
    return {"loss": float(loss), "loss_diff": abs(float(framework) - float(loss)),
            "grad_rel_diff": max(float((a - b).abs().max()) for a, b in zip(ours, grads)) / max(scale, 1e-30)}


def pgd_arms(size: str, device: str, batch: int, P: int, repeats: int) -> dict:
    from mmguard.data.synthetic import generate

    samples = generate(batch, seed=0, types=("colour",), size=SIZES[size].get("image_size", 32))
    with tempfile.TemporaryDirectory() as tmp:
        em = protection("em_image", samples, size, device, Path(tmp) / "em", P)
        bph = protection("mmguard_bph", samples, size, device, Path(tmp) / "bph", P)
        cleans_em, cleans_bph = em.clean_passes(samples), bph.clean_passes(samples)
        for m in (em, bph):
            for a in m.surrogates:
                a.model.eval()
        hand = hand_written_pgd(em.surrogates[0], samples, P)
        agreement = pgd_agreement(em, samples)
        t = interleaved({"hand_written": hand, "em_image": lambda: em.pgd(samples, cleans_em, 0),
                         "mmguard_bph": lambda: bph.pgd(samples, cleans_bph, 0)}, repeats)
    per_step = {k: v / P for k, v in t.items()}
    return {"size": size, "batch": batch, "P": P, "agreement": agreement,
            "step_s": {k: round(v, 5) for k, v in per_step.items()},
            "framework_over_hand_written": round(per_step["em_image"] / per_step["hand_written"], 3),
            "bph_over_em_image": round(per_step["mmguard_bph"] / per_step["em_image"], 3)}


# -- (c): a fine-tuning step ------------------------------------------------------------------------------------
def finetune_arms(steps: int, batch: int, repeats: int) -> dict:
    from transformers import get_cosine_schedule_with_warmup

    from mmguard.attacks.losses import l_train
    from mmguard.config.sections import FinetuneParams, TrainerParams
    from mmguard.data.synthetic import generate
    from mmguard.engine.build import build_victim
    from mmguard.engine.data import train_loader
    from mmguard.engine.finetune import finetune, quiet_lightning

    train = generate(steps * batch, seed=1, types=("colour",))
    params = FinetuneParams(epochs=1, lr=2e-3, batch_size=batch)

    def framework(record=None):
        with quiet_lightning():
            finetune(tiny_llava(), build_victim("full"), params, train, seed=0,
                     trainer=TrainerParams(accelerator="cpu", progress_bar=False),
                     callbacks=[record] if record is not None else [])

    def hand(record=None):
        adapter = tiny_llava()
        trainable = build_victim("full").prepare(adapter)
        adapter.model.train()
        # the same optimizer as the framework's (its weight decay too: AdamW's own default is 0.01)
        opt = torch.optim.AdamW(trainable, lr=params.lr, weight_decay=params.weight_decay, fused=True)
        sched = get_cosine_schedule_with_warmup(opt, int(params.warmup_ratio * steps), steps)
        for b in train_loader(adapter, train, batch, seed=0):
            loss = l_train(adapter.answer_logits(b), reduction="token_mean")
            opt.zero_grad()
            loss.backward()
            if record is not None:
                record.add(loss, trainable)
            opt.step()
            sched.step()

    ours, theirs = Steps(), Steps()
    framework(ours)
    hand(theirs)
    t = interleaved({"hand_written": hand, "framework": framework}, repeats)
    return {"steps": steps, "batch": batch, "agreement": ours.against(theirs),
            "step_s": {k: round(v / steps, 5) for k, v in t.items()},
            "framework_over_hand_written": round(t["framework"] / t["hand_written"], 3)}


class Steps(Callback):
    """Each step's loss and gradients (a Lightning callback for the framework arm, called by hand in the other)."""

    def __init__(self):
        super().__init__()
        self.losses, self.grads = [], []

    def add(self, loss, params) -> None:
        self.losses.append(float(loss))
        self.grads.append(torch.cat([p.grad.detach().flatten() for p in params if p.grad is not None]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self.grads.append(torch.cat([p.grad.detach().flatten() for p in module.trainable if p.grad is not None]))

    def against(self, other: "Steps") -> dict:
        """The largest differences of the two arms' per-step losses and gradients (relative to the largest entry)."""
        assert len(self.losses) == len(other.losses) == len(self.grads) == len(other.grads) > 0
        return {"steps": len(self.losses),
                "loss_diff": max(abs(a - b) for a, b in zip(self.losses, other.losses)),
                "grad_rel_diff": max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                                     for a, b in zip(self.grads, other.grads))}


# -- (d): evaluation of 200 samples ------------------------------------------------------------------------------
def evaluation_arms(n: int, repeats: int, finetuned: bool) -> dict:
    """``finetuned``: the benchmark's victims, which answer a word and stop (a cached loop saves at most the
    second full pass); else a random-init model, whose answers run to ``max_new_tokens`` (zero-shot rows)."""
    from mmguard.config.sections import FinetuneParams, TrainerParams
    from mmguard.data.synthetic import generate
    from mmguard.engine import finetune as engine
    from mmguard.engine.build import build_victim

    spec = importlib.util.spec_from_file_location("test_generate", ROOT / "tests" / "models" / "test_generate.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    trainer = TrainerParams(accelerator="cpu", progress_bar=False)
    adapter = tiny_llava()
    if finetuned:
        with engine.quiet_lightning():
            engine.finetune(adapter, build_victim("full"), FinetuneParams(epochs=6, lr=3e-3, batch_size=16),
                            generate(160, seed=1, types=("colour",)), seed=0, trainer=trainer)
    test = generate(n, seed=2, types=("colour", "count", "position", "colour_choice"), prefix="test")
    new_generate = type(adapter).generate

    def old():
        adapter.generate = lambda samples, max_new_tokens, batch_size: ref.reference_generate(
            adapter, samples, max_new_tokens, batch_size)
        try:
            return engine.evaluate(adapter, test, max_new_tokens=8, batch_size=64, trainer=trainer)
        finally:
            del adapter.generate

    def new():
        return engine.evaluate(adapter, test, max_new_tokens=8, batch_size=64, trainer=trainer)

    before = [p["prediction"] for p in old()["predictions"]]
    assert before == [p["prediction"] for p in new()["predictions"]]
    assert type(adapter).generate is new_generate
    t = interleaved({"before": old, "now": new}, repeats)
    words = sum(len(p.split()) for p in before) / max(1, len(before))
    return {"victim": "fine-tuned (answers a word)" if finetuned else "random init (answers run to 8 tokens)",
            "samples": n, "mean_answer_words": round(words, 2), "seconds": {k: round(v, 3) for k, v in t.items()},
            "speedup": round(t["before"] / t["now"], 2)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="*", default=["tiny", "medium"], choices=sorted(SIZES))
    ap.add_argument("--json", default=str(HERE / "perf.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", "1")))
    repeats = 2 if args.quick else 7
    result = {"benchmark": "perf", "device": args.device, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "python": platform.python_version(), "repeats": repeats,
              "pgd": [pgd_arms(s, args.device, 8, 2 if args.quick else 5, repeats) for s in args.sizes]}
    for row in result["pgd"]:
        print("pgd", row, flush=True)
    if args.device == "cpu":
        result["finetune"] = finetune_arms(4 if args.quick else 40, 16, repeats)
        print("finetune", result["finetune"], flush=True)
        result["evaluate"] = evaluation_arms(40 if args.quick else 200, repeats, finetuned=True)
        print("evaluate", result["evaluate"], flush=True)
        result["evaluate_zero_shot"] = evaluation_arms(40 if args.quick else 200, repeats, finetuned=False)
        print("evaluate_zero_shot", result["evaluate_zero_shot"], flush=True)
    result["targets"] = {
        "a_framework_pgd_over_hand_written<=1.10": all(r["framework_over_hand_written"] <= 1.10 for r in result["pgd"]),
        "b_bph_over_em_image<=1.25": all(r["bph_over_em_image"] <= 1.25 for r in result["pgd"]),
        "c_finetune_over_hand_written<=1.10": result.get("finetune", {}).get("framework_over_hand_written", 0) <= 1.10,
        "d_evaluation_speedup>=3": result.get("evaluate", {}).get("speedup", 0) >= 3,
        "d_zero_shot_evaluation_speedup>=3": result.get("evaluate_zero_shot", {}).get("speedup", 0) >= 3}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["targets"]))
    return result


if __name__ == "__main__":
    main()
