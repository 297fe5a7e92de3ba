"""The paper's regime, shown: does LoRA r8 on a *pre-trained* LVLM learn a domain it does not know?

On the real digit scans (tests/fixtures/digits: 300 train, 100 test, never shown during alignment), the aligned
``effnet-gemma3-270m``'s zero-shot accuracy and its LoRA r8 fine-tuning accuracy after every epoch, per seed (the
seed drives LoRA's initialization and batch order; the data and the aligned weights are fixed); beside it the same
for a tiny twin (tiny-llava, pre-trained on synthetic captions, LoRA r8). The bar: fine-tuned accuracy >= 0.85
and >= 0.30 above zero-shot. Writes pretrained_learnability.{json,md} beside this script.

    python benchmarks/pretrained_learnability.py [--seeds 0 1 2] [--train DATA.json --test DATA.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import lightning as L

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DIGITS = ROOT / "tests" / "fixtures" / "digits"


class EpochAccuracy(L.Callback):
    """Clean-test accuracy after every training epoch (greedy generation, the framework's scorer)."""

    def __init__(self, adapter, test):
        self.adapter, self.test, self.accuracy = adapter, test, []

    def on_train_epoch_end(self, trainer, module):
        from mmguard.metrics.accuracy import is_correct

        answers = self.adapter.generate(self.test, max_new_tokens=6)
        self.accuracy.append(round(sum(is_correct(a, s) for a, s in zip(answers, self.test)) / len(self.test), 4))


def run_model(model: str, victim_args: dict, params: dict, train, test, seeds, precision: str) -> dict:
    from mmguard.config.sections import FinetuneParams, TrainerParams
    from mmguard.core.registry import VICTIMS
    from mmguard.engine.finetune import evaluate, finetune
    from mmguard.engine.models import build_adapter
    from mmguard.models.zoo import ModelSpec

    trainer = TrainerParams(progress_bar=False)
    runs = []
    for seed in seeds:
        started = time.time()
        # seed 0's initialization of the model (the aligned or pre-trained weights are fixed; a tiny twin's
        # random init only matters before its pre-training, which is cached per seed: pinned to 0)
        adapter = build_adapter(ModelSpec(model, pretrained=True, seed=0), progress=False)
        zero_shot = evaluate(adapter, test, trainer=trainer)["accuracy"]
        per_epoch = EpochAccuracy(adapter, test)
        finetune(adapter, VICTIMS.build("lora", **victim_args), FinetuneParams(precision=precision, **params), train,
                 seed=seed, trainer=trainer, callbacks=[per_epoch])
        final = evaluate(adapter, test, trainer=trainer)["accuracy"]
        runs.append({"seed": seed, "zero_shot": round(zero_shot, 4), "accuracy_per_epoch": per_epoch.accuracy,
                     "final": round(final, 4), "peak": max(per_epoch.accuracy), "wall_s": round(time.time() - started, 1)})
        print(f"{model} seed {seed}: zero-shot {zero_shot:.3f}, per epoch {per_epoch.accuracy}, final {final:.3f} "
              f"({runs[-1]['wall_s']:.0f} s)", flush=True)
    return {"model": model, "victim": {"name": "lora", **victim_args}, "finetune": {**params, "precision": precision},
            "runs": runs, "summary": summarize(runs)}


def summarize(runs) -> dict:
    def ms(values):
        return {"mean": round(statistics.mean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}

    zero, final = [r["zero_shot"] for r in runs], [r["final"] for r in runs]
    gain = [f - z for f, z in zip(final, zero)]
    return {"zero_shot": ms(zero), "final": ms(final), "gain": ms(gain), "seeds": len(runs),
            "bar_met_seeds": sum(f >= 0.85 and g >= 0.30 for f, g in zip(final, gain))}


def markdown(result: dict) -> str:
    lines = [f"# Pre-trained regime: LoRA r8 on {result['data']['name']}", "",
             f"Train {result['data']['train_n']}, test {result['data']['test_n']}; seeds {result['seeds']} vary "
             "LoRA's initialization and batch order (data and starting weights fixed). Bar: final >= 0.85 and >= 0.30 "
             "above zero-shot.", "",
             "| model | zero-shot | final (mean ± std) | gain | accuracy per epoch (seed by seed) | bar met |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        s = row["summary"]
        curves = "; ".join(" ".join(f"{a:.2f}" for a in r["accuracy_per_epoch"]) for r in row["runs"])
        lines.append(f"| {row['model']} | {s['zero_shot']['mean']:.3f} ± {s['zero_shot']['std']:.3f} | "
                     f"{s['final']['mean']:.3f} ± {s['final']['std']:.3f} | {s['gain']['mean']:+.3f} | {curves} | "
                     f"{s['bar_met_seeds']}/{s['seeds']} |")
    lines += ["", f"Wall time {result['wall_s']:.0f} s on {result['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train", default=str(DIGITS / "train" / "data.json"))
    ap.add_argument("--test", default=str(DIGITS / "test" / "data.json"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--models", nargs="+", default=["effnet-gemma3-270m", "tiny-llava"])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 32 train, 16 test, 1 epoch, seed 0")
    ap.add_argument("--out", default=str(HERE / "pretrained_learnability"))
    args = ap.parse_args(argv)

    import os
    import platform

    import torch

    from mmguard.data.loaders import read_conversation_file

    torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", os.cpu_count() or 1)))
    train, test = read_conversation_file(args.train), read_conversation_file(args.test)
    seeds, epochs = args.seeds, args.epochs
    if args.quick:
        train, test, seeds, epochs = train[:32], test[:16], [0], 1
    lora = {"rank": 8, "alpha": 16, "dropout": 0.05}
    settings = {"effnet-gemma3-270m": ({"epochs": epochs, "lr": args.lr, "batch_size": 16}, "bf16-mixed"),
                "tiny-llava": ({"epochs": 5 * epochs, "lr": 3e-3, "batch_size": 16}, "32-true")}
    started = time.time()
    rows = []
    for m in args.models:  # the files are rewritten after every model: a cut-short run keeps what it measured
        params, precision = settings.get(m, settings["effnet-gemma3-270m"])
        rows.append(run_model(m, lora, params, train, test, seeds, precision))
        write(args, train, test, seeds, rows, started)
    return 0


def write(args, train, test, seeds, rows, started) -> None:
    import platform

    import torch

    result = {"data": {"name": Path(args.train).parent.parent.name if Path(args.train).parent.name == "train"
                       else Path(args.train).stem, "train": args.train, "test": args.test,
                       "train_n": len(train), "test_n": len(test)},
              "seeds": seeds, "rows": rows, "wall_s": round(time.time() - started, 1),
              "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
