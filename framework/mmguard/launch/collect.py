"""``mmguard collect DIR...``: one table from many run folders (a sweep's, or runs at several seeds).

Each results row is (attack, victim, probe); its settings are the row's flattened config from the folder's
recipe.yaml (``config/flatten.py``). Rows are grouped by (attack, victim, probe) and by every setting that
differs between the folders, except seeds (keys named ``seed``) and settings that do not change numbers (out,
name, logger, progress bar); each group gets n (its folders) and, per metric, the mean and the SAMPLE
standard deviation (ddof=1; none for a single value) over the folders where it is not null. Written as CSV,
Markdown and JSON (``--out DIR``), or one of them to stdout. A DIR without results.json stands for the run
folders inside it (a sweep's root).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from mmguard.core.errors import UserError
from mmguard.core.io import atomic_write_text

METRICS = ("accuracy", "delta_acc", "psnr", "ssim")  # and the optional ones some row has (peak_accuracy, ...)
CELL = ("attack", "victim", "probe")
NOT_GROUPED = ("recipe", "out", "name", "trainer.progress_bar")
STD_NOTE = "mean ± sample standard deviation (ddof=1) over n run folders; n = 1 has no deviation"


def run_folders(dirs: Sequence[str | Path]) -> List[Path]:
    out: List[Path] = []
    for d in map(Path, dirs):
        if (d / "results.json").is_file():
            out.append(d)
        elif d.is_dir() and any((c / "results.json").is_file() for c in d.iterdir()):
            out += sorted(c for c in d.iterdir() if (c / "results.json").is_file())
        else:
            raise UserError(f"{d}: no results.json in it or in its folders (not a run folder of 'mmguard run')")
    return list(dict.fromkeys(out))


def read_folder(path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """results.json and the resolved recipe (recipe.yaml, else the copy in results.json)."""
    try:
        results = json.loads((path / "results.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path / 'results.json'}: cannot be read ({err})") from None
    tree = None
    seeds = results.get("seeds")
    recipe = path / (f"seed-{seeds[0]}/recipe.yaml" if seeds else "recipe.yaml")  # a seed axis: a resolved seed's
    if recipe.is_file():
        tree = yaml.safe_load(recipe.read_text())
    tree = tree if isinstance(tree, dict) else results.get("config")
    if not isinstance(tree, dict):
        raise UserError(f"{path}: no recipe.yaml and no config in results.json: its rows' settings are unknown")
    if results.get("status", "complete") != "complete":
        print(f"mmguard: warning: {path} is not complete (status: {results['status']}); its finished rows are "
              f"included", file=sys.stderr)
    return results, tree


def _grouped(key: str) -> bool:
    return key.rsplit(".", 1)[-1] != "seed" and key not in NOT_GROUPED and not key.startswith("logger.")


def _same(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def collect(dirs: Sequence[str | Path]) -> Dict[str, Any]:
    from mmguard.config.flatten import row_config  # here: the config package imports torch (model names)
    from mmguard.metrics.table import OPTIONAL

    folders = run_folders(dirs)
    records, trees, said = [], [], []
    for folder in folders:
        results, tree = read_folder(folder)
        trees.append(tree)
        said += [results["seeds_vary"]] if results.get("seeds_vary") else []  # a seed axis says it itself
        for row in results.get("rows") or []:
            cell = tuple(row.get(k) for k in CELL)
            config = row_config(tree, row.get("attack"), row.get("victim"), row.get("probe"), strict=False)
            config = {k: v for k, v in config.items() if _grouped(k)}
            records.append({"cell": cell, "config": config, "row": row, "seed": row.get("seed", tree.get("seed")),
                            "folder": str(folder)})
    keys: List[str] = []
    for cell in dict.fromkeys(r["cell"] for r in records):
        mine = [r["config"] for r in records if r["cell"] == cell]
        for k in dict.fromkeys(k for c in mine for k in c):
            if k not in keys and len({_same(c.get(k)) for c in mine}) > 1:
                keys.append(k)
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["cell"], tuple(_same(r["config"].get(k)) for k in keys)), []).append(r)
    metrics = [*METRICS, *(m for m in OPTIONAL if any(r["row"].get(m) is not None for r in records))]
    rows = []
    for (cell, _), members in groups.items():
        out: Dict[str, Any] = dict(zip(CELL, cell))
        out.update({k: members[0]["config"].get(k) for k in keys})
        out.update(n=len(members), seeds=[m["seed"] for m in members])
        for metric in metrics:
            values = [float(m["row"][metric]) for m in members if isinstance(m["row"].get(metric), (int, float))]
            out[f"{metric}_mean"] = float(np.mean(values)) if values else None
            out[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        rows.append(out)
    return {"std": "sample standard deviation (ddof=1)", "group_keys": keys, "metrics": metrics,
            "folders": [str(f) for f in folders], "seeds_vary": said[0] if said else seeds_vary(trees),
            "rows": rows}


def seeds_vary(trees: Sequence[Dict[str, Any]]) -> Optional[str]:
    """What the folders' seeds vary (``config/seeds.py``), from the first two recipes at different seeds; None when
    there are none or they cannot be resolved here."""
    from mmguard.config.seeds import seed_note
    from mmguard.config.spec import resolve

    pair = [t for t in trees if t.get("seed") != trees[0].get("seed")][:1]
    if not pair:
        return None
    try:
        return seed_note(resolve(trees[0]), resolve(pair[0]))
    except Exception:  # noqa: BLE001 - a recipe that no longer resolves (a model gone) only loses the note
        return None


# ----------------------------------------------------------------------------------------------------- writing
def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def to_markdown(table: Dict[str, Any]) -> str:
    keys, metrics = table["group_keys"], table.get("metrics", METRICS)
    head = [*CELL, *keys, "n", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        cells = [_fmt(r[k], 3) for k in (*CELL, *keys)] + [str(r["n"])]
        for metric in metrics:
            digits = 2 if metric == "psnr" else 3
            mean, std = r[f"{metric}_mean"], r[f"{metric}_std"]
            cells.append(_fmt(mean, digits) + ("" if std is None else f" ± {std:.{digits}f}"))
        lines.append("| " + " | ".join(cells) + " |")
    vary = f" {table['seeds_vary']}" if table.get("seeds_vary") else ""
    return "\n".join(lines) + f"\n\n{STD_NOTE}.{vary}\n"


def to_csv(table: Dict[str, Any]) -> str:
    columns = [*CELL, *table["group_keys"], "n", "seeds",
               *(f"{m}_{s}" for m in table.get("metrics", METRICS) for s in ("mean", "std"))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in table["rows"]:
        writer.writerow(["" if r[c] is None else (" ".join(map(str, r[c])) if isinstance(r[c], list) else r[c])
                         for c in columns])
    return buf.getvalue()


def to_json(table: Dict[str, Any]) -> str:
    return json.dumps(table, indent=2) + "\n"


WRITERS = {"md": to_markdown, "csv": to_csv, "json": to_json}


def add_collect_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("dirs", nargs="+", metavar="DIR", help="run folders, or folders of run folders (a sweep's root)")
    s.add_argument("--out", default=None, metavar="DIR", help="write DIR/collect.csv, .md and .json")
    s.add_argument("--format", choices=tuple(WRITERS), default="md", help="what goes to stdout (default md)")


def cmd_collect(args: argparse.Namespace) -> int:
    table = collect(args.dirs)
    if args.out:
        for ext, write in WRITERS.items():
            atomic_write_text(Path(args.out) / f"collect.{ext}", write(table))
    print(WRITERS[args.format](table), end="")
    if args.out:
        print(f"\nwrote {Path(args.out) / 'collect'}.{{csv,md,json}} ({len(table['rows'])} rows from "
              f"{len(table['folders'])} run folders)")
    return 0


def collect_main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="mmguard collect", description=__doc__.split("\n\n")[0])
    add_collect_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_collect(args)
    except UserError as err:
        print(f"mmguard: error: {err}", file=sys.stderr)
        return 2
