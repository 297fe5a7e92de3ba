"""The results table: results.json rows -> markdown (results.md, the console and the report)."""
from __future__ import annotations

from typing import Dict, List, Sequence

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


def results_markdown(results: Dict) -> str:
    head = [f"# {results.get('recipe', 'mmguard')} (seed {results.get('seed')})", ""]
    notes: List[str] = []
    if results.get("elapsed_s") is not None:
        notes.append(f"Wall time: {results['elapsed_s']:.0f} s.")
    return "\n".join(head + [markdown_table(results["rows"]), ""] + notes) + "\n"
