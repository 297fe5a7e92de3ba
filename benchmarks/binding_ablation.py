"""What the binding term adds: MMGuard's BPH and CRS, one factor at a time around their defaults, over seeds.

Around lambda_bind 1, tau 0.5, |K| 1 (recipes/ablation/binding.yaml): lambda_bind in {0, 0.5, 1, 2} (0 is
``multimodal``: the same image and text objective without the binding term, one protected set for both
families), tau in {0.25, 0.5, 1} (BPH's perturbation tokens; CRS has none) and |K| in {1, 2}. Every protected
set is made with the white-box surrogate and fine-tuned by it (white-box) with no probe, JPEG q75 and mix 0.5;
the black-box victim (Gemma 3) fine-tunes the sets of lambda_bind 0 and 1. Each seed is the whole recipe at that
seed: what it varies (the attacks' draws, the black-box victim's initialization, training order) and what the
recipe pins (the data, seed 0; the white-box victim's initialization, seed 6) the markdown says
(``config/seeds.py``).

Every number is a mean over seeds with its sample standard deviation; each cell is compared with lambda_bind 0
on the same seeds by a paired t-test of delta_acc. Tasks run on a pool of worker processes, seed by seed
(benchmarks/taskpool.py); every cell is a resumable run folder, so a killed run continues where it stopped.

    python benchmarks/binding_ablation.py                      # 5 seeds: hours on 2 cores
    python benchmarks/binding_ablation.py --seeds 0 1 --quick  # a smoke run (recipes/debug.yaml overlay)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from taskpool import SharedFits, Task, cell_tasks, protection_tasks, schedule  # noqa: E402

BASE = ROOT / "recipes" / "ablation" / "binding.yaml"
DEBUG = ROOT / "recipes" / "debug.yaml"
WHITEBOX, BLACKBOX = "tiny-llava/full", "tiny-gemma3/full"
DEFAULTS = {"lambda_bind": 1.0, "tau": 0.5, "num_layers": 1}
# (factor, values) per attack family; the default value of each factor is the shared default variant
FACTORS = {"mmguard_bph": [("lambda_bind", [0.5, 1.0, 2.0]), ("tau", [0.25, 1.0]), ("num_layers", [2])],
           "mmguard_crs": [("lambda_bind", [0.5, 1.0, 2.0]), ("num_layers", [2])]}
BLACKBOX_LAMBDAS = (0.0, 1.0)
PROBE_ORDER = ("none", "jpeg_q75", "mix_0.5")  # the base recipe's probes, in its order
ROW_KEYS = ("attack", "threat", "victim", "probe", "lambda_bind", "tau", "num_layers", "seed", "accuracy",
            "delta_acc", "clean_accuracy", "psnr", "label")


def variants() -> List[Dict]:
    """Every protected set of one seed: label, attack name and its (lambda_bind, tau, num_layers)."""
    out = [{"label": "multimodal", "attack": "multimodal", "lambda_bind": 0.0, "tau": None, "num_layers": None}]
    for attack, factors in FACTORS.items():
        short = attack.split("_")[1]
        seen = set()
        for factor, values in factors:
            for value in values:
                params = {k: v for k, v in DEFAULTS.items() if attack == "mmguard_bph" or k != "tau"}
                params[factor] = value
                key = tuple(sorted(params.items()))
                if key in seen:
                    continue
                seen.add(key)
                label = f"{short}_default" if params == {k: DEFAULTS[k] for k in params} else f"{short}_{factor}{value:g}"
                out.append({"label": label, "attack": attack, "tau": None, **params})
    return out


def seed_spec(seed: int, quick: bool, overrides: Sequence[str]):
    """The base recipe at ``seed`` with every variant as an attack entry (labelled), checked by the framework."""
    from mmguard.config.recipe import load_recipe
    from mmguard.config.spec import resolve
    from mmguard.config.tree import attack_tree, to_tree

    base = load_recipe(BASE, [f"seed={seed}", *overrides], overlays=[DEBUG] if quick else [])
    tree = to_tree(base)
    by_name = {a.name: attack_tree(a) for a in base.attacks}
    attacks = []
    for v in variants():
        entry = {**by_name[v["attack"]], "label": v["label"]}
        for key in ("lambda_bind", "tau", "num_layers"):
            if v.get(key) is not None and v["attack"] != "multimodal":
                entry[key] = v[key]
        attacks.append(entry)
    return resolve({**tree, "name": f"binding_ablation-seed{seed}", "attacks": attacks})


def plan(specs, runs: Path) -> Tuple[List[Task], Dict]:
    protected = runs / "protected"
    tasks, keys = protection_tasks(specs, protected)
    blackbox = {v["label"] for v in variants() if v["lambda_bind"] in BLACKBOX_LAMBDAS
                and (v["attack"] == "multimodal" or v["label"].endswith("_default"))}
    shared = SharedFits()  # mix's clean fit is none's
    for rank, spec in enumerate(specs):
        for v in spec.victims:
            attacks = [a for a in spec.attacks if v.label == WHITEBOX or a.label in blackbox]
            for p in spec.probes_of(v):
                out = runs / f"seed-{spec.seed}" / f"{v.label}__{p.label}".replace("/", "_")
                tag = f"{spec.seed}:{v.label}:{p.label}"
                tasks += cell_tasks(spec, v, p, attacks, out, protected, keys, tag,
                                    shares=shared.shares(spec, v, p, attacks, out, tag))
        for t in tasks:
            if t.rank is None:
                t.rank = rank  # seed by seed: the first seeds finish first
    seed_rank = {keys[(spec.name, a.label)]: rank for rank, spec in reversed(list(enumerate(specs)))
                 for a in spec.attacks}
    for t in tasks:
        if t.id in seed_rank:
            t.rank = seed_rank[t.id]
    return tasks, keys


def rows_of(results: Dict[str, Dict], protections: Dict[str, Dict], keys: Dict, specs) -> List[Dict]:
    meta = {v["label"]: v for v in variants()}
    rows = []
    for spec in specs:
        cells: Dict = {}
        for task_id, res in results.items():
            if task_id.split(":")[0] in ("clean", "attacks") and task_id.split(":")[1] == str(spec.seed):
                for r in res["rows"]:
                    cells[(r["attack"], r["victim"], r["probe"])] = r
        for (label, victim, probe), r in sorted(cells.items()):
            if label == "clean":
                continue
            m = meta[label]
            clean = cells.get(("clean", victim, probe), {}).get("accuracy")
            psnr = protections.get(keys.get((spec.name, label)), {}).get("psnr")
            rows.append({"attack": m["attack"], "threat": "whitebox" if victim == WHITEBOX else "blackbox",
                         "victim": victim, "probe": probe, "lambda_bind": m["lambda_bind"], "tau": m["tau"],
                         "num_layers": m["num_layers"], "seed": spec.seed, "accuracy": r["accuracy"],
                         "delta_acc": r["delta_acc"], "clean_accuracy": clean, "psnr": psnr, "label": label})
    return rows


# -- the table -----------------------------------------------------------------------------------------------
def summarize(rows: Sequence[Dict]) -> List[Dict]:
    """Per (threat, probe, variant): n, mean and std of accuracy and delta_acc, and the paired test of delta_acc
    against lambda_bind 0 (multimodal) on the seeds both have."""
    from mmguard.metrics.stats import paired_t_test
    from mmguard.metrics.table import mean_std

    groups: Dict[Tuple[str, str, str], Dict[int, Dict]] = {}
    for r in rows:
        if r["delta_acc"] is not None:
            groups.setdefault((r["threat"], r["probe"], r["label"]), {})[r["seed"]] = r
    meta = {v["label"]: v for v in variants()}
    order = {v["label"]: i for i, v in enumerate(variants())}
    out = []
    probes = {p: i for i, p in enumerate(PROBE_ORDER)}
    for (threat, probe, label), by_seed in sorted(groups.items(), key=lambda kv: (
            kv[0][0] != "whitebox", probes.get(kv[0][1], len(probes)), kv[0][1], order[kv[0][2]])):
        seeds = sorted(by_seed)
        acc, acc_sd = mean_std([by_seed[s]["accuracy"] for s in seeds])
        delta, delta_sd = mean_std([by_seed[s]["delta_acc"] for s in seeds])
        base = groups.get((threat, probe, "multimodal"), {})
        paired = [s for s in seeds if s in base]
        test = (paired_t_test([by_seed[s]["delta_acc"] for s in paired], [base[s]["delta_acc"] for s in paired])
                if label != "multimodal" and paired else None)
        out.append({"threat": threat, "probe": probe, "label": label, "attack": meta[label]["attack"],
                    "lambda_bind": meta[label]["lambda_bind"], "tau": meta[label]["tau"],
                    "num_layers": meta[label]["num_layers"], "seeds": seeds, "n": len(seeds),
                    "accuracy_mean": acc, "accuracy_std": acc_sd, "delta_mean": delta, "delta_std": delta_sd,
                    "vs_lambda0": test})
    return out


def markdown(result: Dict) -> str:
    from mmguard.metrics.table import plus_minus

    machine = result["machine"]
    lines = ["# Binding ablation", "",
             f"{'Quick smoke run' if result['quick'] else 'Full run'} of `benchmarks/binding_ablation.py` on "
             f"{machine['device']}, torch {machine['torch']}, {result['jobs']} worker process(es); seeds "
             f"{', '.join(map(str, result['seeds']))}; wall time {result['wall_s']:.0f} s. Base recipe "
             f"`{result['recipe']}`.",
             "delta_acc = clean accuracy (same victim, probe and seed) minus protected accuracy; mean ± sample std "
             "over seeds. 'vs lambda 0': the mean per-seed difference in delta_acc from multimodal (the same "
             "objective without the binding term) and the paired t-test's two-sided p."
             + (f" {result['seeds_vary']}" if result.get("seeds_vary") else ""), ""]
    for threat in ("whitebox", "blackbox"):
        cells = [c for c in result["summary"] if c["threat"] == threat]
        if not cells:
            continue
        victim = WHITEBOX if threat == "whitebox" else BLACKBOX
        lines += [f"## {threat} (victim {victim})", "",
                  "| probe | set | attack | lambda_bind | tau | abs K | n | accuracy | delta_acc | vs lambda 0 | p |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in cells:
            t = c["vs_lambda0"]
            vs = "-" if not t or t["mean_diff"] is None else f"{t['mean_diff']:+.3f}"
            p = "-" if not t or t["p"] is None else f"{t['p']:.3f}"
            lines.append(f"| {c['probe']} | {c['label']} | {c['attack']} | {c['lambda_bind']:g} | "
                         f"{'-' if c['tau'] is None else format(c['tau'], 'g')} | "
                         f"{'-' if c['num_layers'] is None else c['num_layers']} | {c['n']} | "
                         f"{plus_minus(c['accuracy_mean'], c['accuracy_std'])} | "
                         f"{plus_minus(c['delta_mean'], c['delta_std'])} | "
                         f"{vs} | {p} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--quick", action="store_true", help="a smoke run (recipes/debug.yaml overlay)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="dot-list overrides of the base recipe")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    ap.add_argument("--json", default=None, help="output JSON (markdown beside it); default "
                    "benchmarks/binding_ablation.json, or runs/binding_ablation_quick/... with --quick")
    ap.add_argument("--runs", default=None, help="folder for the runs (protected sets, cells)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from mmguard.config.seeds import seed_note
    from mmguard.core.io import atomic_write_json, atomic_write_text

    threads = int(os.environ.get("MMGUARD_NUM_THREADS", "1"))
    quick_dir = ROOT / "runs" / "binding_ablation_quick"
    out_json = Path(args.json) if args.json else (quick_dir / "binding_ablation.json" if args.quick
                                                   else HERE / "binding_ablation.json")
    runs = Path(args.runs) if args.runs else (quick_dir if args.quick else ROOT / "runs" / "binding_ablation")
    specs = [seed_spec(s, args.quick, args.overrides) for s in args.seeds]  # every seed checked before work
    tasks, keys = plan(specs, runs)
    t0 = time.time()
    result = {"benchmark": "binding_ablation", "quick": args.quick, "recipe": str(BASE.relative_to(ROOT)),
              "overrides": list(args.overrides), "seeds": list(args.seeds), "jobs": max(1, args.jobs),
              "seeds_vary": seed_note(specs[0], specs[1]) if len(specs) > 1 else None,
              "defaults": DEFAULTS, "factors": FACTORS, "blackbox_lambdas": list(BLACKBOX_LAMBDAS),
              "machine": {"device": f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
                          if not torch.cuda.is_available() else "cuda: " + torch.cuda.get_device_name(0),
                          "threads": threads, "python": platform.python_version(), "torch": torch.__version__},
              "wall_s": None, "protections": {}, "rows": [], "summary": []}
    results: Dict[str, Dict] = {}
    protections: Dict[str, Dict] = {}
    print(f"[binding_ablation] {len(tasks)} tasks, seeds {args.seeds}, {args.jobs} worker(s)", flush=True)

    def on_done(task: Task, out: Dict) -> None:
        (protections if task.id.startswith("protect:") else results)[task.id] = out
        result["rows"] = rows_of(results, protections, keys, specs)
        result["summary"] = summarize(result["rows"])
        result["protections"] = {f"{name}:{label}": protections[tid] for (name, label), tid in keys.items()
                                 if tid in protections}
        result["wall_s"] = round(time.time() - t0, 1)
        atomic_write_json(out_json, result)  # what is done so far survives a crash later
        atomic_write_text(out_json.with_suffix(".md"), markdown(result))
        print(f"[binding_ablation] {len(results) + len(protections)}/{len(tasks)} {task.id} "
              f"({time.time() - t0:.0f} s)", flush=True)

    schedule(tasks, max(1, args.jobs), threads, on_done)
    print(f"[binding_ablation] {result['wall_s']:.0f} s; wrote {out_json} and {out_json.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
