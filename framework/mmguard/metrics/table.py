"""The results table: results.json rows -> markdown (results.md, the console and the report)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

COLUMNS = ("attack", "victim", "probe", "accuracy", "delta_acc", "psnr", "ssim")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def markdown_table(rows: Sequence[Dict], columns: Sequence[str] = COLUMNS) -> str:
    cols = list(columns)
    if any(r.get("surrogates") for r in rows):
        cols.insert(1, "surrogates")
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def mean_std(values: Sequence) -> Tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (ddof=1; None below two values) of the non-null values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5


def seed_table(rows: Sequence[Dict]) -> str:
    """Rows of several seeds: per (attack, victim, probe), mean +- sample std over the seeds, and n."""
    cells: Dict[Tuple, List[Dict]] = {}
    for r in rows:
        cells.setdefault((r.get("attack"), r.get("victim"), r.get("probe")), []).append(r)
    cols = ["attack", "victim", "probe", "n", "accuracy", "delta_acc", "psnr", "ssim"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for (attack, victim, probe), members in cells.items():
        stats = []
        for metric in ("accuracy", "delta_acc", "psnr", "ssim"):
            m, sd = mean_std([x.get(metric) for x in members])
            digits = 2 if metric == "psnr" else 3
            stats.append("-" if m is None else f"{m:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}"))
        lines.append(f"| {attack} | {victim} | {probe} | {len(members)} | " + " | ".join(stats) + " |")
    return "\n".join(lines)


def results_markdown(results: Dict) -> str:
    seeds = results.get("seeds")
    title = f"seeds {', '.join(map(str, seeds))}" if seeds else f"seed {results.get('seed')}"
    head = [f"# {results.get('recipe', 'mmguard')} ({title})", ""]
    notes: List[str] = []
    if results.get("elapsed_s") is not None:
        notes.append(f"Wall time: {results['elapsed_s']:.0f} s.")
    if seeds:
        vary = f" {results['seeds_vary']}" if results.get("seeds_vary") else ""
        body = [f"Mean ± sample standard deviation (ddof=1) over the seeds.{vary}", "", seed_table(results["rows"])]
    else:
        body = [markdown_table(results["rows"])]
    return "\n".join(head + body + [""] + notes) + "\n"
