"""The paper's regime, measured: MMGuard against LLaVA's LoRA recipe on the pre-trained effnet-gemma3-270m.

The three pre-trained threat recipes (recipes/pretrained/{whitebox,graybox,blackbox}.yaml: the victim fine-tunes the
aligned model with LoRA r8 beside its projector on the real digit scans; the surrogates are the same aligned model,
its seed-1 alignment, or the tiny families' ensemble) at each seed, cut into tasks for the threat matrix's worker
pool (benchmarks/threat_matrix.py: one protection per distinct attack and train set, one run folder per cell, clean
fits shared by ``fit_hash``), so a killed run resumes where it stopped. Per (threat, probe, attack): accuracy and
delta_acc, mean ± sample std over seeds; the binding attacks (mmguard_bph, mmguard_crs) against multimodal (the same
objective without the binding term) by a paired t-test of delta_acc on the seeds both have. Writes
pretrained_regime.{json,md} beside this script.

    python benchmarks/pretrained_regime.py                          # seeds 0 1 2: hours on 2 cores
    python benchmarks/pretrained_regime.py --seeds 0 --threats whitebox --attacks mmguard_bph --probes none --quick
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import threat_matrix  # noqa: E402
from taskpool import Task, carry_over, schedule  # noqa: E402

THREATS = ("whitebox", "graybox", "blackbox")
RECIPES = ROOT / "recipes" / "pretrained"
DEBUG = ROOT / "recipes" / "debug.yaml"
BINDING = ("mmguard_bph", "mmguard_crs")
REFERENCE = "multimodal"
ATTACK_ORDER = ("zero_shot", "clean", "random", "em_image", "trigger_text", "multimodal", "mmguard_bph", "mmguard_crs")


def load(threat: str, seed: int, quick: bool, overrides: Sequence[str], attacks: Optional[Sequence[str]],
         probes: Optional[Sequence[str]]):
    """The threat recipe at ``seed``, checked by the framework, cut to the attacks and probes asked for."""
    from mmguard.config.recipe import load_recipe
    from mmguard.core.errors import UserError

    cfg = load_recipe(RECIPES / f"{threat}.yaml", [*overrides, f"seed={seed}"], overlays=[DEBUG] if quick else [])
    keep_a = [a for a in cfg.attacks if attacks is None or a.label in attacks]
    keep_p = [p for p in cfg.probes if probes is None or p.label in probes]
    for asked, have, what in ((attacks, cfg.attacks, "attack"), (probes, cfg.probes, "probe")):
        unknown = sorted(set(asked or ()) - {x.label for x in have})
        if unknown and threat == "whitebox":  # the white-box recipe has every attack and probe
            raise UserError(f"--{what}s: {', '.join(unknown)} is not among the {what}s of "
                            f"recipes/pretrained/{threat}.yaml")
    return dataclasses.replace(cfg, name=f"pretrained-{threat}-seed{seed}", attacks=keep_a, probes=keep_p)


def summarize(rows: Sequence[Dict]) -> List[Dict]:
    """Per (threat, probe, attack): n, mean ± std of accuracy and of delta_acc, and for the binding attacks the
    paired test of delta_acc against multimodal on the seeds both have."""
    from mmguard.metrics.stats import paired_t_test
    from mmguard.metrics.table import mean_std

    groups: Dict = {}
    for r in rows:
        groups.setdefault((r["threat"], r["probe"], r["attack"]), {})[r["seed"]] = r
    order = {a: i for i, a in enumerate(ATTACK_ORDER)}
    out = []
    for (threat, probe, attack), by_seed in sorted(groups.items(), key=lambda kv: (
            THREATS.index(kv[0][0]) if kv[0][0] in THREATS else 9, kv[0][1] != "none", kv[0][1],
            order.get(kv[0][2], 99))):
        seeds = sorted(by_seed)
        acc = [by_seed[s]["accuracy"] for s in seeds if by_seed[s].get("accuracy") is not None]
        delta = {s: by_seed[s]["delta_acc"] for s in seeds if by_seed[s].get("delta_acc") is not None}
        ref = {s: r["delta_acc"] for s, r in groups.get((threat, probe, REFERENCE), {}).items()
               if r.get("delta_acc") is not None}
        paired = sorted(set(delta) & set(ref))
        test = (paired_t_test([delta[s] for s in paired], [ref[s] for s in paired])
                if attack in BINDING and paired else None)
        am, asd = mean_std(acc) if acc else (None, None)
        dm, dsd = mean_std(list(delta.values())) if delta else (None, None)
        out.append({"threat": threat, "probe": probe, "attack": attack, "seeds": seeds, "n": len(seeds),
                    "threat_model": by_seed[seeds[0]].get("threat_model"),
                    "accuracy_mean": am, "accuracy_std": asd, "delta_mean": dm, "delta_std": dsd,
                    "vs_multimodal": test})
    return out


def markdown(result: Dict) -> str:
    from mmguard.metrics.table import plus_minus

    m = result["machine"]
    lines = ["# The paper's regime: MMGuard against LoRA fine-tuning of the pre-trained effnet-gemma3-270m", "",
             f"{'Quick smoke run' if result['quick'] else 'Run'} of `benchmarks/pretrained_regime.py` on {m['device']} "
             f"({m['threads']} thread(s) per worker, {result['jobs']} worker(s)), torch {m['torch']}; seeds "
             f"{', '.join(map(str, result['seeds']))}; wall time {result['wall_s'] or 0:.0f} s.",
             "Accuracy on the clean test set, mean ± sample std over the seeds (n); delta_acc = the clean fine-tune's "
             "accuracy (same victim, probe and seed) minus the protected one's. 'vs multimodal': the mean per-seed "
             "difference in delta_acc from multimodal (the same objective without binding) and the paired t-test's "
             "two-sided p.", ""]
    for threat in THREATS:
        cells = [c for c in result["summary"] if c["threat"] == threat]
        if not cells:
            continue
        vary = (result.get("seeds_vary") or {}).get(f"pretrained-{threat}")
        lines += [f"## {threat}", ""] + ([vary, ""] if vary else []) + [
            "| probe | attack | threat model | n | accuracy | delta_acc | vs multimodal | p |",
            "|---|---|---|---|---|---|---|---|"]
        for c in cells:
            t = c["vs_multimodal"]
            vs = "-" if not t or t.get("mean_diff") is None else f"{t['mean_diff']:+.3f}"
            p = "-" if not t or t.get("p") is None else f"{t['p']:.3f}"
            lines.append(f"| {c['probe']} | {c['attack']} | {c['threat_model'] or '-'} | {c['n']} | "
                         f"{plus_minus(c['accuracy_mean'], c['accuracy_std'])} | "
                         f"{plus_minus(c['delta_mean'], c['delta_std'])} | "
                         f"{vs} | {p} |")
        lines.append("")
    if result.get("protections"):
        lines += ["## Protections", "", "| threat | attack | surrogates | PSNR (dB) | SSIM | protect (s, mean) |",
                  "|---|---|---|---|---|---|"]
        for p in result["protections"]:
            lines.append(f"| {p['threat']} | {p['attack']} | {', '.join(p['surrogates'])} | "
                         f"{threat_matrix._f(p['psnr'], 2)} | {threat_matrix._f(p['ssim'])} | "
                         f"{threat_matrix._f(p['protect_seconds'], 0)} |")
        lines.append("")
    return "\n".join(lines)


def read_prior(path: Path, result: Dict) -> Dict:
    """The earlier run's JSON at ``path`` when it ran the same benchmark (its task log is carried over); else {}."""
    import json

    if not path.is_file():
        return {}
    try:
        prior = json.loads(path.read_text())
    except ValueError:
        return {}
    same = all(prior.get(k) == result[k] for k in ("benchmark", "quick", "overrides"))
    return prior if same else {}


def main(argv: Sequence[str] | None = None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threats", nargs="+", choices=THREATS, default=list(THREATS))
    ap.add_argument("--attacks", nargs="+", default=None, help="attack labels to keep (default: all)")
    ap.add_argument("--probes", nargs="+", default=None, help="probe labels to keep (default: all)")
    ap.add_argument("--quick", action="store_true", help="a smoke run (recipes/debug.yaml overlay)")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="dot-list overrides of every recipe")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (a 270M model: one, on every thread)")
    ap.add_argument("--json", default=None, help="output JSON (markdown beside it); default beside this script, "
                    "or under runs/pretrained_regime_quick/ with --quick")
    ap.add_argument("--runs", default=None, help="folder for the runs (protected sets, cells)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from mmguard.core.io import atomic_write_json, atomic_write_text

    threads = int(os.environ.get("MMGUARD_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, args.jobs)))))
    quick_dir = ROOT / "runs" / "pretrained_regime_quick"
    out_json = Path(args.json) if args.json else (quick_dir / "pretrained_regime.json" if args.quick
                                                   else HERE / "pretrained_regime.json")
    runs = Path(args.runs) if args.runs else (quick_dir if args.quick else ROOT / "runs" / "pretrained_regime")
    cfgs, notes = [], {}  # every recipe at every seed checked before any work
    for threat in args.threats:
        for seed in args.seeds:
            cfgs.append((threat, seed, load(threat, seed, args.quick, args.overrides, args.attacks, args.probes)))
        notes[f"pretrained-{threat}"] = threat_matrix.seeds_vary(
            RECIPES / f"{threat}.yaml", args.overrides, [DEBUG] if args.quick else [], args.seeds[0])
    t0 = time.time()
    result = {"benchmark": "pretrained_regime", "quick": args.quick, "seeds": list(args.seeds),
              "threats": list(args.threats), "attacks": args.attacks, "probes": args.probes,
              "overrides": list(args.overrides), "jobs": max(1, args.jobs), "seeds_vary": notes,
              "recipes": [f"recipes/pretrained/{t}.yaml" for t in args.threats],
              "machine": {"device": "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available()
                          else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
                          "threads": threads, "python": platform.python_version(), "torch": torch.__version__},
              "wall_s": None, "rows": [], "summary": [], "protections": []}
    tasks, protect_keys = threat_matrix.plan(cfgs, runs)
    prior = read_prior(out_json, result)
    todo, results, keys = carry_over(tasks, prior.get("tasks") or {})
    before = float(prior.get("wall_s") or 0.0) if results else 0.0  # the wall time of the runs resumed
    planned = {t.id for t in tasks}
    others = {tid: e for tid, e in (prior.get("tasks") or {}).items() if tid not in planned}  # kept, not lost
    print(f"[pretrained_regime] {len(tasks)} tasks ({len(results)} carried over from {out_json.name}), seeds "
          f"{args.seeds}, {args.jobs} worker(s) x {threads} thread(s)", flush=True)

    def write() -> None:
        threats = threat_matrix.assemble(cfgs, tasks, protect_keys, results, runs)
        result["rows"] = [r for t in threats for r in t["rows"]]
        result["summary"] = summarize(result["rows"])
        result["protections"] = [{"threat": t["threat"], "attack": name, **{k: a.get(k) for k in (
            "surrogates", "psnr", "ssim", "protect_seconds")}} for t in threats for name, a in t["attacks"].items()]
        result["work_s"] = round(sum(t["work_s"] for t in threats), 1)
        result["wall_s"] = round(before + time.time() - t0, 1)
        result["done"] = f"{len(results)}/{len(tasks)}"
        result["tasks"] = {**others, **{tid: {"key": keys[tid], "out": out} for tid, out in results.items()}}
        atomic_write_json(out_json, result)  # what is done so far survives a crash later, and resumes a new clone
        atomic_write_text(out_json.with_suffix(".md"), markdown(result))

    def on_done(task: Task, out: Dict) -> None:
        results[task.id] = out
        write()
        print(f"[pretrained_regime] {len(results)}/{len(tasks)} {task.id} ({time.time() - t0:.0f} s)", flush=True)

    write()
    schedule(todo, max(1, args.jobs), threads, on_done)
    print(f"[pretrained_regime] {result['wall_s']:.0f} s; wrote {out_json} and {out_json.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
