"""The threat matrix: accuracy and delta_acc per (attack, threat model, victim, probe), PSNR/SSIM per attack.

Each threat recipe (default: recipes/threat/{whitebox,graybox,blackbox}.yaml) is merged with the matrix
overlay (recipes/threat/matrix.yaml: data size, the probe axis, the fine-tuning-recipe axis with adversarial
training and qlora) and run by the Runner, which protects the train set once per attack and reuses it for
every victim and probe. Writes JSON and a markdown table beside this script (or where --json says).

    python benchmarks/threat_matrix.py                  # the full matrix (2 processes; about 30 min on 2 cores)
    python benchmarks/threat_matrix.py --quick          # a few-minute smoke run (recipes/debug.yaml overlay)
    python benchmarks/threat_matrix.py recipes/threat/whitebox.yaml --set data.n_train=128
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, Sequence

ROOT = Path(__file__).resolve().parents[1]
THREATS = [ROOT / "recipes" / "threat" / f"{t}.yaml" for t in ("whitebox", "graybox", "blackbox")]
MATRIX = ROOT / "recipes" / "threat" / "matrix.yaml"
DEBUG = ROOT / "recipes" / "debug.yaml"  # --quick: the smoke-run overlay
HERE = Path(__file__).resolve().parent

# What the issue asks the matrix to cover: probe names (a probe's label may differ) and victim recipes.
REQUIRED_PROBES = ("jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser",
                   "punctuation", "case", "whitespace", "rcp_punctuation", "jpeg_case", "blur_whitespace", "mix")
ROW_KEYS = ("threat", "attack", "surrogates", "victim", "probe", "accuracy", "delta_acc", "clean_accuracy",
            "psnr", "ssim", "seconds", "note")


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


def run_threat(cfg, runs: Path) -> Dict:
    from mmguard.engine.runner import Runner

    t0 = time.time()
    runner = Runner(cfg, str(runs / cfg.name))
    res = runner.run()
    runner.write()
    wall = round(time.time() - t0, 1)
    clean = {(r["victim"], r["probe"]): r["accuracy"] for r in res["rows"] if r["attack"] == "clean"}
    rows = []
    for r in res["rows"]:
        row = {k: r.get(k) for k in ROW_KEYS}
        row["threat"] = cfg.name
        row["clean_accuracy"] = clean.get((r["victim"], r["probe"]))
        rows.append(row)
    attacks = {}
    for label, ps in runner.protected.items():
        attacks[label] = {"surrogates": ps.surrogates, "psnr": ps.summary["psnr"], "ssim": ps.summary["ssim"],
                          "linf_max_255": ps.summary.get("linf_max_255"), "protect_seconds": ps.summary["seconds"],
                          "rounds": ps.summary["rounds"]}
    return {"threat": cfg.name, "wall_s": wall, "victims": [_victim(v) for v in cfg.victims],
            "probes": [probe_tree(p) for p in cfg.probes], "attacks": attacks, "rows": rows,
            "out": _rel(runs / cfg.name)}


def _worker_init(threads: int) -> None:
    import torch

    from mmguard.core.registry import load_plugins

    _die_with_parent()
    torch.set_num_threads(threads)
    load_plugins()


def _die_with_parent() -> None:
    """A killed matrix must not leave its workers running (and writing into its run folders): on Linux the
    kernel sends them SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def add_threat(result: Dict, threat: Dict) -> None:
    """A threat model's summary goes to ``threats``, its rows (tagged with the threat) to ``rows``."""
    threat = dict(threat)
    result["rows"] += threat.pop("rows")
    result["threats"].append(threat)


def probe_tree(p) -> Dict:
    from mmguard.config.spec import probe_tree as tree

    return tree(p)


def _victim(v) -> Dict:
    f = v.finetune
    return {"label": v.label, "model": v.model.name, "name": v.name, "epochs": f.epochs, "lr": f.lr,
            "adv_eps": f.adv_eps, "adv_steps": f.adv_steps, "probes": v.probes}


# -- markdown ----------------------------------------------------------------------------------------------
def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: Dict) -> str:
    kind = "Quick smoke run" if result["quick"] else "Full run"
    machine = result["machine"]
    per_threat = ", ".join("%s %.0f s" % (t["threat"], t["wall_s"]) for t in result["threats"])
    recipes = ", ".join("`%s`" % r for r in result["recipes"])
    lines = ["# Threat matrix", "",
             f"{kind} of `benchmarks/threat_matrix.py` on {machine['device']} ({machine['threads']} intra-op "
             f"thread(s)), torch {machine['torch']}; wall time {result['wall_s']:.0f} s in all ({per_threat}).",
             f"Recipes: {recipes}, overlay `{result['matrix']}`"
             + (f", overrides `{' '.join(result['overrides'])}`." if result["overrides"] else "."),
             "Accuracy is on the clean test set; delta_acc = clean fine-tuning accuracy (same victim, same probe) "
             "minus the protected one (larger: stronger protection).", "",
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
        lines += ["", f"## {t['threat']}", "",
                  "accuracy (delta_acc) per attack; seconds: fine-tuning + evaluation of the row's fits", "",
                  "| victim | probe | clean | " + " | ".join(attacks) + " | seconds |",
                  "|---|---|---|" + "---|" * len(attacks) + "---|"]
        cells: Dict = {}
        for r in rows:
            cells.setdefault((r["victim"], r["probe"]), {})[r["attack"]] = r
            if r.get("note") and r["attack"] == "clean":
                notes.append(f"{t['threat']} {r['victim']} ({r['probe']}): {r['note']}")
        for (victim, probe), by in cells.items():
            clean = by.get("clean", {})
            accs = [f"{_f(by[a]['accuracy'])} ({_f(by[a]['delta_acc'], 2)})" if a in by else "-" for a in attacks]
            secs = sum(r.get("seconds") or 0 for r in by.values())
            lines.append(f"| {victim} | {probe} | {_f(clean.get('accuracy'))} | " + " | ".join(accs) +
                         f" | {secs:.0f} |")
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
                    "benchmarks/threat_matrix.json, or runs/threat_matrix_quick/threat_matrix.json with --quick")
    ap.add_argument("--runs", default=None, help="folder for the runs (protected sets, predictions, logs)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="threat models run side by side in this many processes (one thread each by default)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from mmguard.core.io import atomic_write_json, atomic_write_text
    from mmguard.config.recipe import load_recipe

    threads = int(os.environ.get("MMGUARD_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    quick_dir = ROOT / "runs" / "threat_matrix_quick"
    out_json = Path(args.json) if args.json else (quick_dir / "threat_matrix.json" if args.quick
                                                   else HERE / "threat_matrix.json")
    runs = Path(args.runs) if args.runs else (quick_dir if args.quick else ROOT / "runs" / "threat_matrix")
    recipes = [Path(r) for r in args.recipes] or THREATS

    overlays = [args.matrix] + ([DEBUG] if args.quick else [])
    cfgs = [load_recipe(path, args.overrides, overlays=overlays) for path in recipes]  # all checked before work
    check_coverage(cfgs)

    t0 = time.time()
    result = {"benchmark": "threat_matrix", "quick": args.quick, "recipes": [_rel(p) for p in recipes],
              "matrix": _rel(Path(args.matrix)), "overrides": list(args.overrides),
              "machine": {"device": "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
                          "threads": threads, "python": platform.python_version(), "torch": torch.__version__},
              "wall_s": None, "threats": [], "rows": []}
    for cfg in cfgs:
        print(f"[threat_matrix] {cfg.name}: {len(cfg.victims)} victims x {len(cfg.probes)} probes x "
              f"(clean + {len(cfg.attacks)} attacks)", flush=True)

    def record(threats: Sequence[Dict]) -> None:
        result["threats"], result["rows"] = [], []
        for threat in threats:  # in recipe order, whatever order they finished in
            add_threat(result, threat)
        result["wall_s"] = round(time.time() - t0, 1)
        atomic_write_json(out_json, result)  # what is done so far survives a crash later
        atomic_write_text(out_json.with_suffix(".md"), markdown(result))

    done: Dict[int, Dict] = {}
    if args.jobs <= 1 or len(cfgs) == 1:
        for i, cfg in enumerate(cfgs):
            done[i] = run_threat(cfg, runs)
            record([done[k] for k in sorted(done)])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # Longest first (most probes x victims), so the pool's tail is short.
        order = sorted(range(len(cfgs)), key=lambda i: -len(cfgs[i].probes) * len(cfgs[i].victims))
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(run_threat, cfgs[i], runs): i for i in order}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
                print(f"[threat_matrix] {cfgs[futures[fut]].name} done", flush=True)
                record([done[k] for k in sorted(done)])
    print(f"[threat_matrix] {result['wall_s']:.0f} s; wrote {out_json} and {out_json.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
