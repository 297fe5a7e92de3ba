"""Evaluation-time greedy generation: the cached, left-padded ``LVLMAdapter.generate`` against the uncached loop
it replaced (``reference_generate`` in tests/models/test_generate.py: the whole prompt re-run for every new
token, one group per prompt length and image size).

Both run on the same 200 synthetic test samples, called as evaluation calls them (DataLoader batches of 64,
batch_size 64, max_new_tokens 8), interleaved repeat by repeat so that machine load hits both alike, and their
outputs must be identical. Each model runs in two regimes: as built (random init: answers mostly run to
max_new_tokens, as an untrained or confused model's do) and taught (a few fine-tuning steps on the real answers
of a train split: the answer word, then the stop token, as a fine-tuned victim answers). Two test sets: the
four question types of mixed prompt lengths, and the quickstart's colour questions (one prompt length, so the
old grouping batched them fully and only the cache helps).

    python benchmarks/generate_speed.py        # one CPU thread, about 2 minutes; writes generate_speed.json here
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

from mmguard.data.synthetic import generate
from mmguard.models import build_model

ROOT = Path(__file__).resolve().parents[1]
DATA = {"mixed": ("colour", "count", "position", "colour_choice"), "colour": ("colour",)}


def load_reference():
    spec = importlib.util.spec_from_file_location("test_generate", ROOT / "tests" / "models" / "test_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class WorkCounter:
    """Forward calls and token positions run through the model (prompt re-runs included)."""

    def __init__(self, model):
        self.calls = self.tokens = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        self.calls += 1
        self.tokens += int(kwargs["input_ids"].numel())

    def take(self):
        out = (self.calls, self.tokens)
        self.calls = self.tokens = 0
        return out


def evaluate(fn, adapter, samples, batch: int, max_new_tokens: int):
    """As ``engine.finetune.evaluate`` drives generation: one call per DataLoader batch."""
    out = []
    for i in range(0, len(samples), batch):
        out += fn(adapter, samples[i:i + batch], max_new_tokens, batch)
    return out


def new_generate(adapter, samples, max_new_tokens, batch_size):
    return adapter.generate(samples, max_new_tokens=max_new_tokens, batch_size=batch_size)


def measure(ref, name, data, regime, args):
    adapter = build_model(name, seed=0)
    test = generate(args.n, seed=1, types=DATA[data], prefix="test")
    if regime == "taught":
        ref.teach(adapter, generate(64, seed=2, types=DATA[data], prefix="train"), steps=args.teach_steps)
    counter = WorkCounter(adapter.model)
    runs = {"old": (ref.reference_generate, []), "new": (new_generate, [])}
    outputs, work = {}, {}
    for rep in range(args.repeats + 1):  # repeat 0 warms up, untimed
        for key, (fn, times) in runs.items():
            t = time.perf_counter()
            outputs[key] = evaluate(fn, adapter, test, args.batch, args.max_new_tokens)
            elapsed = time.perf_counter() - t
            work[key] = counter.take()
            if rep:
                times.append(elapsed)
    old_s, new_s = (statistics.median(runs[k][1]) for k in ("old", "new"))
    cell = {"model": name, "data": data, "regime": regime, "old_s": old_s, "new_s": new_s, "speedup": old_s / new_s,
            "old_runs_s": runs["old"][1], "new_runs_s": runs["new"][1],
            "forward_calls": {k: work[k][0] for k in work}, "token_positions_run": {k: work[k][1] for k in work},
            "identical": outputs["old"] == outputs["new"], "distinct_outputs": len(set(outputs["new"])),
            "mean_answer_words": sum(len(o.split()) for o in outputs["new"]) / len(test)}
    print(f"{name:18s} {data:7s} {regime:7s} old {old_s:6.2f} s  new {new_s:6.2f} s  x{cell['speedup']:4.1f}  "
          f"calls {work['old'][0]:4d} -> {work['new'][0]:3d}  identical {cell['identical']}  "
          f"words/answer {cell['mean_answer_words']:.1f}", flush=True)
    return cell


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny-llava", "tiny-qwen2_5_vl", "tiny-gemma3"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64, help="evaluation batch size (recipes' eval.batch_size)")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--teach-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ref = load_reference()
    t0 = time.perf_counter()
    cells = [measure(ref, name, data, regime, args) for name in args.models for data in DATA
             for regime in ("random", "taught")]
    speedups = [c["speedup"] for c in cells]
    result = {"n": args.n, "batch": args.batch, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "threads": args.threads, "teach_steps": args.teach_steps,
              "speedup_min": min(speedups), "speedup_max": max(speedups),
              "speedup_geomean": math.exp(sum(map(math.log, speedups)) / len(speedups)),
              "all_identical": all(c["identical"] for c in cells), "cells": cells,
              "wall_s": time.perf_counter() - t0, "host": platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "transformers": transformers.__version__}
    print(f"speed-up: min x{result['speedup_min']:.2f}, geometric mean x{result['speedup_geomean']:.2f}, "
          f"max x{result['speedup_max']:.2f}; outputs identical: {result['all_identical']}")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
