"""Is the tiny benchmark a place where unlearnable examples can work at all? For a few (data, victim) settings,
fine-tune on the clean train set and on an *oracle shortcut* set (a fixed word per answer class appended to
every train question: the perfect class-consistent text trigger), and report clean-test accuracy of both.

A setting is a fair test bed for protections when clean fine-tuning learns the task (accuracy well above
zero-shot) AND a perfect shortcut can stop it (oracle accuracy near chance). Each setting runs at every seed of
``--seeds`` (0, the recipes' default, and 6, the initialization the quickstart and white-box victims are pinned to):
the seed draws the victim's initialization (from init) or picks its twin (the twin's pre-training seed), LoRA's
initialization and the batch order; the synthetic data keep their seed 0 (the benchmarks' data) and the digit
scans are files. Prints a table and writes benchmarks/learnability.json and .md beside this script.

    python benchmarks/learnability.py [--seeds 0 6] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LEARNED_MARGIN = 0.10  # a clean victim "learns" when its accuracy is this far above chance
SHORTCUT_WORDS = ("table", "river", "house", "music", "garden", "window", "paper", "stone", "cloud", "light")


def settings(quick: bool):
    digits = {"name": "llava_json", "train": str(ROOT / "tests/fixtures/digits/train/data.json"),
              "test": str(ROOT / "tests/fixtures/digits/test/data.json")}
    colour = {"name": "synthetic", "types": ["colour"], "n_train": 400, "n_test": 200}
    lora_twin = {"name": "lora", "pretrained": True, "epochs": 10, "lr": 3e-3}
    scratch = {"name": "full", "pretrained": False, "epochs": 30, "lr": 2e-3}
    rows = [
        ("colour, full contrast", colour, lora_twin),
        ("colour, full contrast", colour, scratch),
        ("colour, contrast 0.5", {**colour, "contrast": 0.5}, scratch),
        ("digits (real scans)", digits, scratch),
    ]
    if quick:
        rows = [(n, {**d, "n_train": 48, "n_test": 24} if d["name"] == "synthetic" else {**d, "limit": 48},
                 {**v, "epochs": 2}) for n, d, v in rows[1:3]]
    return rows


def with_shortcut(samples):
    """Each class's answer gets one fixed word appended to the question."""
    classes = sorted({s.answer for s in samples})
    word = {c: SHORTCUT_WORDS[i % len(SHORTCUT_WORDS)] for i, c in enumerate(classes)}
    out = []
    for s in samples:
        s = copy.copy(s)
        s.question = f"{s.question} {word[s.answer]}"
        out.append(s)
    return out


def fit(model, victim, train, test, seed=0):
    from mmguard.config.sections import FinetuneParams, TrainerParams
    from mmguard.config.spec import ModelSpec
    from mmguard.engine.build import build_model, build_victim
    from mmguard.engine.finetune import evaluate, finetune

    adapter = build_model(ModelSpec(model, pretrained=victim["pretrained"], seed=seed))
    params = {"rank": 8, "alpha": 16, "dropout": 0.0} if victim["name"] == "lora" else {}
    trainer = TrainerParams(progress_bar=False)
    finetune(adapter, build_victim(victim["name"], **params),
             FinetuneParams(lr=victim["lr"], epochs=victim["epochs"], batch_size=16), train, seed=seed,
             trainer=trainer)
    return evaluate(adapter, test, max_new_tokens=6, trainer=trainer)["accuracy"]


def main(argv=None) -> dict:
    from mmguard.cli import set_cpu_threads
    from mmguard.engine.finetune import quiet_lightning
    from mmguard.core.registry import load_plugins
    from mmguard.engine.build import build_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke version (tiny data, 2 epochs)")
    ap.add_argument("--model", default="tiny-llava")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 6], help="victim seeds (--quick: the first)")
    ap.add_argument("--out", default=str(HERE / "learnability"))
    args = ap.parse_args(argv)
    set_cpu_threads()
    load_plugins()
    seeds = args.seeds[:1] if args.quick else args.seeds
    started = time.time()
    rows = []
    for name, data, victim in settings(args.quick):
        kwargs = {k: v for k, v in data.items() if k != "name"}
        splits = build_data(data["name"], **kwargs)  # synthetic: the loader's seed 0
        chance = 1.0 / len({s.answer for s in splits["test"]})
        for seed in seeds:
            t0 = time.time()
            with quiet_lightning():
                clean = fit(args.model, victim, splits["train"], splits["test"], seed)
                oracle = fit(args.model, victim, with_shortcut(splits["train"]), splits["test"], seed)
            start = "pre-trained twin" if victim["pretrained"] else "from init"
            rows.append({"data": name, "victim": f"{victim['name']} ({start}, {victim['epochs']} epochs)", "seed": seed,
                         "clean": clean, "oracle_shortcut": oracle, "chance": chance,
                         "learned": clean > chance + LEARNED_MARGIN, "seconds": round(time.time() - t0, 1)})
            print(rows[-1], flush=True)
    lines = ["| data | victim | seed | clean acc | oracle-shortcut acc | chance | clean learns |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['data']} | {r['victim']} | {r['seed']} | {r['clean']:.3f} | {r['oracle_shortcut']:.3f} | "
              f"{r['chance']:.3f} | {'yes' if r['learned'] else 'no'} |" for r in rows]
    table = "\n".join(lines)
    print("\n" + table)
    result = {"model": args.model, "quick": args.quick, "seeds": seeds, "learned_margin": LEARNED_MARGIN,
              "rows": rows, "wall_s": round(time.time() - started, 1)}
    if not args.quick:
        Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
        Path(args.out + ".md").write_text(
            f"# Learnability of the tiny benchmark ({args.model})\n\n"
            f"Seeds {', '.join(map(str, seeds))} vary the victim's initialization (from init) or its pre-trained twin, "
            "LoRA's initialization and the batch order; the synthetic data are drawn with seed 0 (the benchmarks' "
            "data) and the digit scans are fixed files. 'Clean learns': clean accuracy more than "
            f"{LEARNED_MARGIN:.2f} above chance. Wall time {result['wall_s']:.0f} s.\n\n{table}\n")
    return result


if __name__ == "__main__":
    main()
