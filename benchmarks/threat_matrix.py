"""The threat matrix: accuracy and delta_acc per (attack, threat model, victim, probe), PSNR/SSIM per attack.

Each threat recipe (default: recipes/threat/{whitebox,graybox,blackbox}.yaml) is merged with the matrix
overlay (recipes/threat/matrix.yaml) and cut into tasks for a pool of worker processes: one protection per
distinct attack spec and train set (shared between threats that protect alike), and per (threat, victim, probe)
cell a clean fit and then, once the protected sets exist, the attacks' fits. Each cell is its own run folder,
run by the Runner with the protected sets passed in (``reuse``), so a probe axis spreads over every worker and
a killed matrix resumes where it stopped. Writes JSON and a markdown table beside this script (or where --json
says).

    python benchmarks/threat_matrix.py                  # the full matrix (2 processes; about 15 min on 2 cores)
    python benchmarks/threat_matrix.py --quick          # a few-minute smoke run (recipes/debug.yaml overlay)
    python benchmarks/threat_matrix.py --seeds 0 1 2    # mean ± std over seeds: threat_matrix_seeds.{json,md}
    python benchmarks/threat_matrix.py recipes/threat/whitebox.yaml --set data.n_train=128
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from taskpool import SharedFits, Task, cell_tasks, protection_tasks, schedule  # noqa: E402
THREATS = [ROOT / "recipes" / "threat" / f"{t}.yaml" for t in ("whitebox", "graybox", "blackbox")]
MATRIX = ROOT / "recipes" / "threat" / "matrix.yaml"
DEBUG = ROOT / "recipes" / "debug.yaml"  # --quick: the smoke-run overlay
HERE = Path(__file__).resolve().parent

# What the issue asks the matrix to cover: probe names (a probe's label may differ) and victim recipes.
REQUIRED_PROBES = ("jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser",
                   "punctuation", "case", "whitespace", "rcp_punctuation", "jpeg_case", "blur_whitespace", "mix",
                   "question_strip", "onion")
ROW_KEYS = ("threat", "threat_model", "seed", "attack", "surrogates", "victim", "probe", "accuracy", "delta_acc",
            "clean_accuracy", "psnr", "ssim", "seconds", "note")


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_coverage(cfgs: Sequence) -> None:
    """Fail early when the matrix leaves out a probe the issue lists."""
    names = set()
    for cfg in cfgs:
        for p in cfg.probes:
            names.add(p.name)
            names.update(q["name"] if isinstance(q, dict) else q for q in p.params.get("probes", []) or [])
    missing = [p for p in REQUIRED_PROBES if p not in names]
    if missing:
        print(f"[threat_matrix] note: the matrix has no {', '.join(missing)} probe", file=sys.stderr)


def plan(cfgs, runs: Path) -> Tuple[List[Task], Dict]:
    """The tasks of the whole matrix (``cfgs``: (threat, seed, recipe) triples). An attack whose spec and train set
    two threats share is protected once (white- and gray-box protect with the same surrogate), and a clean fit
    that several probes share once; every cell is its own run folder, so the cells of one threat spread over the
    workers."""
    protected = runs / "protected"
    tasks, keys = protection_tasks([cfg for _, _, cfg in cfgs], protected)
    shared = SharedFits()  # a probe that leaves the clean set as it is (mix, question_strip, ...) shares none's fit
    for threat, seed, cfg in cfgs:
        for v in cfg.victims:
            for p in cfg.probes_of(v):
                out = runs / threat / f"seed-{seed}" / f"{v.label}__{p.label}".replace("/", "_")
                tag = f"{cfg.name}:{v.label}:{p.label}"
                for t in cell_tasks(cfg, v, p, cfg.attacks, out, protected, keys, tag,
                                    shares=shared.shares(cfg, v, p, cfg.attacks, out, tag)):
                    t.rank = seed  # seed by seed: the first seed's matrix is whole first
                    tasks.append(t)
    for t in tasks:
        if t.first:
            t.rank = min(seed for _, seed, cfg in cfgs for a in cfg.attacks if keys[(cfg.name, a.label)] == t.id)
    return tasks, keys


def assemble(cfgs, tasks: Sequence[Task], keys: Dict, results: Dict[str, Dict], runs: Path) -> List[Dict]:
    """Per threat, in recipe order: its rows over every seed (each with its clean accuracy), its protections,
    its work time."""
    threats: Dict[str, Dict] = {}
    for threat, seed, cfg in cfgs:
        entry = threats.setdefault(threat, {"threat": threat, "work_s": 0.0, "seeds": [],
                                            "victims": [_victim(v) for v in cfg.victims],
                                            "probes": [probe_tree(p) for p in cfg.probes], "attacks": {},
                                            "rows": [], "out": _rel(runs / threat)})
        entry["seeds"].append(seed)
        rows = {}
        for t in tasks:
            if t.id.split(":")[0] in ("clean", "attacks") and t.id.split(":")[1] == cfg.name and t.id in results:
                entry["work_s"] = round(entry["work_s"] + results[t.id]["seconds"], 1)
                for r in results[t.id]["rows"]:
                    rows[(r["attack"], r["victim"], r["probe"])] = r
        clean = {(v, p): r["accuracy"] for (a, v, p), r in rows.items() if a == "clean"}
        for v in cfg.victims:
            start = rows.get(("zero_shot", v.label, "none"))  # the model it starts from: one row, whatever the probe
            if start is not None:
                entry["rows"].append({**{k: start.get(k) for k in ROW_KEYS}, "threat": threat, "seed": seed,
                                      "clean_accuracy": None, "threat_model": None})
            for p in cfg.probes_of(v):
                for a in ["clean", *(x.label for x in cfg.attacks)]:
                    r = rows.get((a, v.label, p.label))
                    if r is None:
                        continue
                    row = {k: r.get(k) for k in ROW_KEYS}
                    row.update(threat=threat, seed=seed, clean_accuracy=clean.get((v.label, p.label)),
                               threat_model=row_threat(cfg, v.label, a))
                    entry["rows"].append(row)
        for a in cfg.attacks:
            done = results.get(keys[(cfg.name, a.label)])
            if done is not None:
                entry["attacks"].setdefault(a.label, {"surrogates": done["surrogates"], "per_seed": {}})
                entry["attacks"][a.label]["per_seed"][str(seed)] = done
    for entry in threats.values():
        for a in entry["attacks"].values():
            for key in ("psnr", "ssim", "protect_seconds"):
                vals = [d[key] for d in a["per_seed"].values() if d.get(key) is not None]
                a[key] = sum(vals) / len(vals) if vals else None
    return list(threats.values())


def row_threat(cfg, victim: str, attack: str):
    """The threat model of a row (``attack`` against ``victim``) from the weights its models start from: the
    white-box recipe's adapter rows fine-tune the pre-trained twin, not the surrogate's random init (gray-box)."""
    from mmguard.models.threat import threat_model

    return None if attack == "clean" else threat_model(cfg.attack(attack).surrogates, cfg.victim(victim).model)


def seeds_vary(path: Path, overrides: Sequence[str], overlays: Sequence, seed: int) -> str:
    """What the seeds of a threat recipe vary (the recipe at ``seed`` and at the next seed compared)."""
    from mmguard.config.recipe import load_recipe
    from mmguard.config.seeds import seed_note

    return seed_note(*(load_recipe(path, [*overrides, f"seed={s}"], overlays=overlays) for s in (seed, seed + 1)))


def add_threat(result: Dict, threat: Dict) -> None:
    """A threat model's summary goes to ``threats``, its rows (tagged with the threat) to ``rows``."""
    threat = dict(threat)
    result["rows"] += threat.pop("rows")
    result["threats"].append(threat)


def probe_tree(p) -> Dict:
    from mmguard.config.tree import probe_tree as tree

    return tree(p)


def _victim(v) -> Dict:
    f = v.finetune
    return {"label": v.label, "model": v.model.name, "seed": v.model.seed, "pretrained": v.model.pretrained,
            "name": v.name, "epochs": f.epochs, "lr": f.lr,
            "adv_eps": f.adv_eps, "adv_steps": f.adv_steps, "probes": v.probes}


# -- markdown ----------------------------------------------------------------------------------------------
def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _mean(rows: Sequence[Dict], key: str) -> str:
    """mean (± sample std when more than one seed) of ``key`` over ``rows``."""
    from mmguard.metrics.table import mean_std

    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return "-"
    mean, std = mean_std(vals)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if len(vals) > 1 else "")


def _cell(rows: Sequence[Dict]) -> str:
    return f"{_mean(rows, 'accuracy')} ({_mean(rows, 'delta_acc')})"


def markdown(result: Dict) -> str:
    kind = "Quick smoke run" if result["quick"] else "Full run"
    machine = result["machine"]
    per_threat = ", ".join("%s %.0f s" % (t["threat"], t["work_s"]) for t in result["threats"])
    recipes = ", ".join("`%s`" % r for r in result["recipes"])
    lines = ["# Threat matrix", "",
             f"{kind} of `benchmarks/threat_matrix.py` on {machine['device']} ({machine['threads']} intra-op "
             f"thread(s)), torch {machine['torch']}, {result['jobs']} worker process(es); wall time "
             f"{result['wall_s']:.0f} s in all (fine-tuning and evaluation work per threat: {per_threat}; "
             "protections shared between threats are done once).",
             f"Recipes: {recipes}, overlay `{result['matrix']}`"
             + (f", overrides `{' '.join(result['overrides'])}`." if result["overrides"] else "."),
             "Accuracy is on the clean test set; delta_acc = clean fine-tuning accuracy (same victim, same probe) "
             "minus the protected one (larger: stronger protection). A section is a threat recipe; a row's threat "
             "model is decided from the weights its victim and the attack's surrogates start from (white-box: the "
             "victim starts from a surrogate's weights; gray-box: other weights of the same family; black-box: "
             "other families).", "",
             "## Protections", "",
             "| threat | attack | surrogates | PSNR (dB) | SSIM | protect (s) |", "|---|---|---|---|---|---|"]
    for t in result["threats"]:
        for name, a in t["attacks"].items():
            lines.append(f"| {t['threat']} | {name} | {', '.join(a['surrogates'])} | {_f(a['psnr'], 2)} | "
                         f"{_f(a['ssim'])} | {_f(a['protect_seconds'], 1)} |")
    notes = []
    for t in result["threats"]:
        rows = [r for r in result["rows"] if r["threat"] == t["threat"]]
        attacks = list(t["attacks"]) or sorted({r["attack"] for r in rows if r["attack"] != "clean"})
        vary = (result.get("seeds_vary") or {}).get(t["threat"])
        lines += ["", f"## {t['threat']}", "",
                  "accuracy (delta_acc) per attack" + (f", mean ± sample std over seeds {', '.join(map(str, t['seeds']))}"
                                                       if len(t["seeds"]) > 1 else f", seed {t['seeds'][0]}")
                  + "; seconds: fine-tuning + evaluation of the row's fits." + (f" {vary}" if vary else ""), "",
                  "| victim | probe | threat model | clean | " + " | ".join(attacks) + " | seconds |",
                  "|---|---|---|---|" + "---|" * len(attacks) + "---|"]
        cells: Dict = {}
        for r in rows:
            cells.setdefault((r["victim"], r["probe"]), {}).setdefault(r["attack"], []).append(r)
            if r.get("note") and r["attack"] == "clean" and r["seed"] == t["seeds"][0]:
                notes.append(f"{t['threat']} {r['victim']} ({r['probe']}): {r['note']}")
        for (victim, probe), by in cells.items():
            accs = [_cell(by[a]) if a in by else "-" for a in attacks]
            secs = sum(r.get("seconds") or 0 for rs in by.values() for r in rs)
            threats = "/".join(dict.fromkeys(r.get("threat_model") or "-" for a in attacks for r in by.get(a, [])))
            lines.append(f"| {victim} | {probe} | {threats or '-'} | {_mean(by.get('clean', []), 'accuracy')} | "
                         + " | ".join(accs) + f" | {secs:.0f} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="*", help="threat recipes (default: whitebox, graybox, blackbox)")
    ap.add_argument("--matrix", default=str(MATRIX), help="overlay merged onto each recipe")
    ap.add_argument("--quick", action="store_true", help="a few-minute smoke version")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="dot-list overrides for every recipe, after the overlay")
    ap.add_argument("--json", default=None, help="output JSON (markdown beside it, .md); default "
                    "benchmarks/threat_matrix.json (threat_matrix_seeds.json with several --seeds), under "
                    "runs/threat_matrix_quick/ with --quick")
    ap.add_argument("--runs", default=None, help="folder for the runs (protected sets, predictions, logs)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="run the matrix at each seed (default: the recipes' seed); cells show mean ± std")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes (one thread each by default)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from mmguard.core.io import atomic_write_json, atomic_write_text
    from mmguard.config.recipe import load_recipe

    threads = int(os.environ.get("MMGUARD_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    quick_dir = ROOT / "runs" / "threat_matrix_quick"
    name = "threat_matrix_seeds.json" if args.seeds and len(args.seeds) > 1 else "threat_matrix.json"
    out_json = Path(args.json) if args.json else (quick_dir / name if args.quick else HERE / name)
    runs = Path(args.runs) if args.runs else (quick_dir if args.quick else ROOT / "runs" / "threat_matrix")
    recipes = [Path(r) for r in args.recipes] or THREATS

    overlays = [args.matrix] + ([DEBUG] if args.quick else [])
    import dataclasses

    cfgs, notes = [], {}  # (threat, seed, recipe at that seed), all checked before any work; what seeds vary
    for path in recipes:
        base = load_recipe(path, args.overrides, overlays=overlays)
        notes[base.name] = seeds_vary(path, args.overrides, overlays, (args.seeds or [base.seed])[0])
        for seed in args.seeds or [base.seed]:
            cfg = load_recipe(path, [*args.overrides, f"seed={seed}"], overlays=overlays)
            cfgs.append((base.name, seed, dataclasses.replace(cfg, name=f"{base.name}-seed{seed}")))
    check_coverage([cfg for _, _, cfg in cfgs])

    t0 = time.time()
    result = {"benchmark": "threat_matrix", "quick": args.quick, "recipes": [_rel(p) for p in recipes],
              "matrix": _rel(Path(args.matrix)), "overrides": list(args.overrides), "jobs": max(1, args.jobs),
              "seeds": args.seeds, "seeds_vary": notes,
              "machine": {"device": "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
                          "threads": threads, "python": platform.python_version(), "torch": torch.__version__},
              "wall_s": None, "threats": [], "rows": []}
    for _, _, cfg in cfgs:
        print(f"[threat_matrix] {cfg.name}: {len(cfg.victims)} victims x {len(cfg.probes)} probes x "
              f"(clean + {len(cfg.attacks)} attacks)", flush=True)

    tasks, keys = plan(cfgs, runs)
    results: Dict[str, Dict] = {}
    print(f"[threat_matrix] {len(tasks)} tasks on {args.jobs} worker(s)", flush=True)

    def on_done(task: Task, out: Dict) -> None:
        results[task.id] = out
        result["threats"], result["rows"] = [], []
        for threat in assemble(cfgs, tasks, keys, results, runs):
            add_threat(result, threat)
        result["wall_s"] = round(time.time() - t0, 1)
        atomic_write_json(out_json, result)  # what is done so far survives a crash later
        atomic_write_text(out_json.with_suffix(".md"), markdown(result))
        print(f"[threat_matrix] {len(results)}/{len(tasks)} {task.id} ({time.time() - t0:.0f} s)", flush=True)

    schedule(tasks, max(1, args.jobs), threads, on_done)
    print(f"[threat_matrix] {result['wall_s']:.0f} s; wrote {out_json} and {out_json.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
