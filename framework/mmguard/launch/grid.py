"""A sweep's grid: ``--grid key=v1,v2`` options -> points (every combination, or N seeded random draws), each a
plain ``mmguard run RECIPE key=value ... --out ROOT/<name>`` with a readable, stable folder name made of its
values. Every point is resolved before anything runs, so a bad value fails in one line naming its grid key."""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmguard.config.recipe import load_recipe
from mmguard.config.spec import RunSpec
from mmguard.core.errors import UserError

Grid = List[Tuple[str, List[str]]]
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
OPEN, CLOSE, QUOTES = "[{(", "]})", "'\""


def split_values(text: str) -> List[str]:
    """``0,0.5,1`` -> three values; commas inside brackets or quotes belong to a value
    (``[tiny-llava],[tiny-llava,tiny-qwen2_5_vl]`` is two lists)."""
    values, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in QUOTES:
            quote = ch
        elif ch in OPEN:
            depth += 1
        elif ch in CLOSE:
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(items: Sequence[str]) -> Grid:
    grid: Grid = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--grid {item}: expected key=v1,v2,... (e.g. --grid seed=0,1,2)")
        values = split_values(text)
        if any(v == "" for v in values):
            raise UserError(f"--grid {item}: an empty value; separate values with single commas")
        if len(set(values)) != len(values):
            raise UserError(f"--grid {item}: a value is given twice")
        if key in dict(grid):
            raise UserError(f"--grid {key}: given twice; put all its values in one --grid")
        grid.append((key, values))
    if not grid:
        raise UserError("no --grid given: e.g. --grid seed=0,1,2")
    return grid


def short_keys(keys: Sequence[str]) -> Dict[str, str]:
    """A grid key's name in folder names: its last part (``lambda_bind``), the whole key where that is
    ambiguous (``attacks.0.lambda_bind`` and ``attacks.1.lambda_bind``)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _safe(value: str) -> str:
    value = value.strip("[](){}'\" ").replace(",", "+").replace(" ", "")
    return UNSAFE.sub("_", value) or "_"


@dataclasses.dataclass
class Point:
    name: str                   # the run folder's name under the sweep's root
    values: Dict[str, str]      # grid key -> value as given

    @property
    def overrides(self) -> List[str]:
        return [f"{k}={v}" for k, v in self.values.items()]


def points(grid: Grid, draws: Optional[int] = None, seed: int = 0) -> List[Point]:
    """Every combination (first grid key slowest), or ``draws`` distinct ones drawn with ``seed``, in grid
    order."""
    keys = [k for k, _ in grid]
    combos = list(itertools.product(*(values for _, values in grid)))
    if draws is not None:
        if not 1 <= draws <= len(combos):
            raise UserError(f"--random {draws}: the grid has {len(combos)} points; draw between 1 and {len(combos)}")
        combos = [combos[i] for i in sorted(random.Random(seed).sample(range(len(combos)), draws))]
    short = short_keys(keys)
    out = []
    for combo in combos:
        name = "__".join(f"{short[k]}-{_safe(v)}" for k, v in zip(keys, combo))
        if len(name) > 120:  # folder names stay manageable; the hash keeps them distinct and stable
            name = name[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
        out.append(Point(name, dict(zip(keys, combo))))
    names = [p.name for p in out]
    for i, p in enumerate(out):
        if names.count(p.name) > 1:  # values that differ only in characters a folder name drops
            p.name += "-" + hashlib.sha1(repr(sorted(p.values.items())).encode()).hexdigest()[:8]
    return out


def check_points(recipe: str, pts: Sequence[Point], fixed: Sequence[str] = (), overlays: Sequence[str] = ()
                 ) -> List[RunSpec]:
    """Each point's resolved spec; the first that does not resolve raises a UserError naming the grid key whose
    value alone breaks the recipe, or else the combination."""
    try:
        base: Optional[RunSpec] = load_recipe(recipe, fixed, overlays)
    except UserError:
        base = None  # the grid may supply what the recipe lacks; then no value can be blamed alone
    specs = []
    for p in pts:
        try:
            specs.append(load_recipe(recipe, [*fixed, *p.overrides], overlays))
        except UserError as err:
            if base is not None:
                for key, value in p.values.items():
                    try:
                        load_recipe(recipe, [*fixed, f"{key}={value}"], overlays)
                    except UserError as alone:
                        raise UserError(f"--grid {key}: value '{value}': {alone}") from None
            raise UserError(f"grid point {' '.join(p.overrides)}: {err}") from None
    return specs


def run_argv(recipe: str, point: Point, root: Path, fixed: Sequence[str] = (), overlays: Sequence[str] = (),
             extra: Sequence[str] = ()) -> List[str]:
    """``mmguard run RECIPE [fixed] [point] [--overlay Y] --out ROOT/<name> [extra]``."""
    argv = ["mmguard", "run", str(recipe), *fixed, *point.overrides]
    for overlay in overlays:
        argv += ["--overlay", str(overlay)]
    return [*argv, "--out", str(Path(root) / point.name), *extra]
