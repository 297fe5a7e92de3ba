"""The results table: results.json rows -> markdown (results.md, the console and the report)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

COLUMNS = ("attack", "victim", "probe", "accuracy", "delta_acc", "psnr", "ssim")
# shown after delta_acc when some row has them: the peak over epochs (eval.per_epoch), the epoch early_stop kept,
# the samples isolate dropped
OPTIONAL = ("peak_accuracy", "best_epoch", "isolated")


def with_optional(rows: Sequence[Dict], columns: Sequence[str] = COLUMNS) -> List[str]:
    """``columns`` and, after delta_acc, the optional columns that some row of ``rows`` fills."""
    cols = list(columns)
    at = cols.index("delta_acc") + 1 if "delta_acc" in cols else len(cols)
    cols[at:at] = [c for c in OPTIONAL if any(r.get(c) is not None for r in rows)]
    return cols


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def markdown_table(rows: Sequence[Dict], columns: Sequence[str] = COLUMNS) -> str:
    cols = with_optional(rows, columns)
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


def plus_minus(mean: Optional[float], std: Optional[float]) -> str:
    """``0.812 ± 0.031`` (the std left out below two seeds; ``-`` for no value)."""
    if mean is None:
        return "-"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def seed_table(rows: Sequence[Dict]) -> str:
    """Rows of several seeds: per (attack, victim, probe), mean +- sample std over the seeds, and n."""
    cells: Dict[Tuple, List[Dict]] = {}
    for r in rows:
        cells.setdefault((r.get("attack"), r.get("victim"), r.get("probe")), []).append(r)
    metrics = with_optional(rows, ("accuracy", "delta_acc", "psnr", "ssim"))
    cols = ["attack", "victim", "probe", "n", *metrics]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for (attack, victim, probe), members in cells.items():
        stats = []
        for metric in metrics:
            m, sd = mean_std([x.get(metric) for x in members])
            digits = {"psnr": 2, "best_epoch": 1, "isolated": 1}.get(metric, 3)
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
