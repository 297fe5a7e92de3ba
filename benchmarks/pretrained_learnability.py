"""The paper's regime, shown: does LoRA r8 on a *pre-trained* LVLM learn a domain it does not know?

On the real digit scans (tests/fixtures/digits: 300 train, 100 test, never shown during alignment), the aligned
``effnet-gemma3-270m``'s zero-shot accuracy and its fine-tuning accuracy after every epoch, per seed (the seed
drives LoRA's initialization and batch order; the data and the aligned weights are fixed). The victim is LLaVA's
LoRA recipe: LoRA r8 on the language model with the projector trained beside it (``projector_lora``; ``--victim
lora`` freezes the projector). Beside it the same for a tiny twin (tiny-llava, pre-trained on synthetic captions).
The bar: fine-tuned accuracy >= 0.85 and >= 0.30 above zero-shot. ``--data clipart`` runs the same on Open Clip
Art in eight classes (``data/clipart.py``), a set the project never trains on. Writes
pretrained_learnability[_clipart].{json,md} beside this script; every finished seed is kept under --runs, so a run
cut short resumes.

    python benchmarks/pretrained_learnability.py [--seeds 0 1 2] [--data clipart | --train A.json --test B.json]
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
RECIPE = ROOT / "recipes" / "pretrained" / "learn.yaml"


class EpochAccuracy(L.Callback):
    """Clean-test accuracy after every training epoch (greedy generation, the framework's scorer)."""

    def __init__(self, adapter, test):
        self.adapter, self.test, self.accuracy = adapter, test, []

    def on_train_epoch_end(self, trainer, module):
        from mmguard.metrics.accuracy import is_correct

        answers = self.adapter.generate(self.test, max_new_tokens=6)
        self.accuracy.append(round(sum(is_correct(a, s) for a, s in zip(answers, self.test)) / len(self.test), 4))
        print(f"  epoch {len(self.accuracy)}: accuracy {self.accuracy[-1]:.3f}", flush=True)


def file_digests(files) -> list:
    import hashlib

    return [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files]


def run_key(model, victim, victim_args, params, precision, data_digests, n, seed) -> str:
    """What one seed's run is: a finished run with the same key is read back, not fitted again."""
    import hashlib

    blob = json.dumps({"model": model, "victim": victim, "victim_args": victim_args, "params": params,
                       "precision": precision, "seed": seed, "n": n, "data": data_digests}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_model(model: str, victim: str, victim_args: dict, params: dict, train, test, seeds, precision: str,
              runs_dir: Path, data_files) -> dict:
    import torch

    from mmguard.config.sections import FinetuneParams, TrainerParams
    from mmguard.config.spec import ModelSpec
    from mmguard.core.io import atomic_write_json
    from mmguard.engine.build import build_model, build_victim
    from mmguard.engine.finetune import evaluate, finetune

    trainer = TrainerParams(progress_bar=False)
    runs, digests = [], file_digests(data_files)  # read once, not once a seed
    for seed in seeds:
        key = run_key(model, victim, victim_args, params, precision, digests, [len(train), len(test)], seed)
        done = runs_dir / f"{model}-{victim}-seed{seed}-{key}.json"
        if done.is_file():  # a run cut short resumes at the first seed it had not finished
            runs.append(json.loads(done.read_text()))
            print(f"{model} seed {seed}: read back from {done}", flush=True)
            continue
        started = time.time()
        # seed 0's initialization of the model (the aligned or pre-trained weights are fixed; a tiny twin's
        # random init only matters before its pre-training, which is cached per seed: pinned to 0)
        adapter = build_model(ModelSpec(model, pretrained=True, seed=0), progress=False)
        zero_shot = evaluate(adapter, test, trainer=trainer)["accuracy"]
        per_epoch = EpochAccuracy(adapter, test)
        finetune(adapter, build_victim(victim, **victim_args), FinetuneParams(precision=precision, **params), train,
                 seed=seed, trainer=trainer, callbacks=[per_epoch])
        final = evaluate(adapter, test, trainer=trainer)["accuracy"]
        runs.append({"seed": seed, "zero_shot": round(zero_shot, 4), "accuracy_per_epoch": per_epoch.accuracy,
                     "final": round(final, 4), "peak": max(per_epoch.accuracy),
                     "wall_s": round(time.time() - started, 1),
                     "threads": torch.get_num_threads()})
        atomic_write_json(done, runs[-1])
        print(f"{model} seed {seed}: zero-shot {zero_shot:.3f}, per epoch {per_epoch.accuracy}, final {final:.3f} "
              f"({runs[-1]['wall_s']:.0f} s)", flush=True)
    return {"model": model, "victim": {"name": victim, **victim_args}, "finetune": {**params, "precision": precision},
            "runs": runs}


# The digits' bar: a fine-tune that learns the domain, well above what the model knew. On another set (whose
# classes and difficulty are its own) only the gain is asked for.
BARS = {"digits": {"final": 0.85, "gain": 0.30}}
OTHER_BAR = {"final": None, "gain": 0.30}


def summarize(runs, bar) -> dict:
    def ms(values):
        return {"mean": round(statistics.mean(values), 4),
                "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}

    zero, final = [r["zero_shot"] for r in runs], [r["final"] for r in runs]
    gain = [f - z for f, z in zip(final, zero)]
    return {"zero_shot": ms(zero), "final": ms(final), "gain": ms(gain), "seeds": len(runs),
            "bar_met_seeds": sum((bar["final"] is None or f >= bar["final"]) and g >= bar["gain"]
                                 for f, g in zip(final, gain))}


def bar_text(bar) -> str:
    return (f"final >= {bar['final']:.2f} and " if bar["final"] is not None else "") + \
        f">= {bar['gain']:.2f} above zero-shot"


def markdown(result: dict) -> str:
    victims = ", ".join(dict.fromkeys(f"{r['victim']['name']} r{r['victim']['rank']}" for r in result["rows"]))
    lines = [f"# Pre-trained regime: {victims} on {result['data']['name']}", "",
             f"Train {result['data']['train_n']}, test {result['data']['test_n']}; seeds {result['seeds']} vary "
             "LoRA's initialization and batch order (data and starting weights fixed; the projector, where it trains, "
             f"starts from the aligned one). Bar: {bar_text(result['bar'])}.", "",
             "| model | zero-shot | final (mean ± std) | gain | accuracy per epoch (seed by seed) | bar met |",
             "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        s = row["summary"]
        curves = "; ".join(" ".join(f"{a:.2f}" for a in r["accuracy_per_epoch"]) for r in row["runs"])
        lines.append(f"| {row['model']} | {s['zero_shot']['mean']:.3f} ± {s['zero_shot']['std']:.3f} | "
                     f"{s['final']['mean']:.3f} ± {s['final']['std']:.3f} | {s['gain']['mean']:+.3f} | {curves} | "
                     f"{s['bar_met_seeds']}/{s['seeds']} |")
    per_seed = "; ".join(f"{row['model']} seed {r['seed']} {r['wall_s']:.0f} s" + (f" ({r['threads']} thread(s))"
                                                                                 if r.get("threads") else "")
                         for row in result["rows"] for r in row["runs"])
    lines += ["", f"Wall time per seed (model, zero-shot, fine-tuning, an evaluation after every epoch): {per_seed}; "
              f"on {result['machine'].split(',')[0]}.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--data", choices=["digits", "clipart"], default="digits",
                    help="digits: the real digit scans; clipart: Open Clip Art in eight classes (data/clipart.py), a "
                         "set the project never trains on")
    ap.add_argument("--train", help="a LLaVA-JSON train file instead of --data")
    ap.add_argument("--test", help="its test file")
    ap.add_argument("--epochs", type=int, help="default: the recipe's")
    ap.add_argument("--lr", type=float, help="default: the recipe's")
    ap.add_argument("--batch-size", type=int, help="default: the recipe's")
    ap.add_argument("--models", nargs="+", default=["effnet-gemma3-270m", "tiny-llava"])
    ap.add_argument("--victim", choices=["lora", "projector_lora", "dora"],
                    help="what trains (default: the recipe's, LoRA r8 beside the projector; lora: projector frozen)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 32 train, 16 test, 1 epoch, seed 0")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "pretrained_learnability"),
                    help="where each finished seed is kept (a re-run reads them back)")
    ap.add_argument("--out", help="the JSON and markdown's path without suffix (default: beside this script)")
    args = ap.parse_args(argv)
    if bool(args.train) != bool(args.test):
        ap.error("--train and --test go together")
    args.out = args.out or str(HERE / ("pretrained_learnability" + ("" if args.data == "digits" else f"_{args.data}")))

    import os

    import torch

    from mmguard.data.loaders import read_conversation_file

    torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", os.cpu_count() or 1)))
    if not args.train and args.data == "clipart":
        from mmguard.models.zoo import cache_dir
        from mmguard.data.clipart import write_clipart_set

        args.train, args.test = map(str, write_clipart_set(cache_dir(), cache_dir() / "sets" / "clipart"))
    elif not args.train:
        args.train, args.test = str(DIGITS / "train" / "data.json"), str(DIGITS / "test" / "data.json")
    train, test = read_conversation_file(args.train), read_conversation_file(args.test)
    victim, lora, params, precision = recipe_victim(args)
    seeds = args.seeds
    if args.quick:
        train, test, seeds, params = train[:32], test[:16], [0], {**params, "epochs": 1}
    # the tiny twin learns at its own pace and precision: five times the epochs, 32-bit
    settings = {"effnet-gemma3-270m": (params, precision),
                "tiny-llava": ({**params, "epochs": 5 * params["epochs"], "lr": 3e-3}, "32-true")}
    started = time.time()
    rows = []
    for m in args.models:  # the files are rewritten after every model: a cut-short run keeps what it measured
        params, precision = settings.get(m, settings["effnet-gemma3-270m"])
        rows.append(run_model(m, victim, lora, params, train, test, seeds, precision, Path(args.runs),
                              (args.train, args.test)))
        write(args, train, test, seeds, rows, started)
    return 0


def recipe_victim(args):
    """The victim of the README's recipe (recipes/pretrained/learn.yaml), with the command line's changes: its
    name, adapter settings, fine-tuning settings and precision (one source, so the table is the recipe's)."""
    from mmguard.config.recipe import load_recipe

    v = load_recipe(RECIPE).victims[0]
    f = v.finetune
    lora = {k: _plain(v.params[k]) for k in ("rank", "alpha", "dropout")}
    params = {"epochs": args.epochs or f.epochs, "lr": args.lr or f.lr, "batch_size": args.batch_size or f.batch_size}
    return args.victim or v.name, lora, params, f.precision


def _plain(x):
    """16.0 -> 16: a run's key is the same whether a number came from YAML or from the command line."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def relative(path: str) -> str:
    """A path inside the repository or the cache, written without this machine's prefix."""
    from mmguard.models.zoo import cache_dir

    for base, shown in ((ROOT, ""), (cache_dir(), "$MMGUARD_CACHE/")):
        try:
            return shown + Path(path).resolve().relative_to(Path(base).resolve()).as_posix()
        except ValueError:
            pass
    return path


def write(args, train, test, seeds, rows, started) -> None:
    import platform

    import torch

    name = Path(args.train).parent.parent.name if Path(args.train).parent.name == "train" else Path(args.train).stem
    bar = BARS.get(name, OTHER_BAR)
    rows = [{**row, "summary": summarize(row["runs"], bar)} for row in rows]
    result = {"data": {"name": name, "train": relative(args.train), "test": relative(args.test),
                       "train_n": len(train), "test_n": len(test)},
              "seeds": seeds, "bar": bar, "rows": rows, "wall_s": round(time.time() - started, 1),
              "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads"}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
