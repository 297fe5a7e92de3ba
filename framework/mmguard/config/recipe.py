"""Recipes: YAML read through omegaconf, with includes, overlays and dot-list overrides.

``load_recipe(path, overrides, overlays)`` merges a recipe, the recipes it includes (``include: [base.yaml]``),
overlay files (later ones win: ``recipes/debug.yaml`` shrinks any recipe) and command-line overrides
(``victims.0.epochs=3``), resolves interpolations (``out: runs/${name}``) and hands the plain mapping to
``config.spec.resolve``, which checks every key before any work starts. Errors are ``UserError``s naming the
file and the key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmguard.config.spec import RunSpec, resolve
from mmguard.config.tree import to_tree
from mmguard.core.errors import UserError


def _read_yaml(path: Path, seen: Sequence[Path] = ()) -> DictConfig:
    if not path.is_file():
        raise UserError(f"recipe file '{path}' does not exist")
    if path.resolve() in seen:
        raise UserError(f"recipe '{path}' includes itself (through {' -> '.join(str(p) for p in seen)})")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError, OSError, ValueError, TypeError) as err:
        # OSError: omegaconf's word for a top level that is not a mapping
        raise UserError(f"recipe '{path}' is not a valid YAML mapping: {err}") from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"recipe '{path}' must be a mapping at the top level")
    includes = cfg.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged = OmegaConf.create()
    for inc in includes:
        merged = _merge(merged, _read_yaml(path.parent / str(inc), [*seen, path.resolve()]), path)
    return _merge(merged, cfg, path)


def _merge(base: DictConfig, other: DictConfig, path: Path) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise UserError(f"recipe '{path}': cannot merge: {err.msg if hasattr(err, 'msg') else err}") from None


def parse_overrides(overrides: Sequence[str]) -> List[Tuple[str, Any]]:
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"bad command-line override '{item}': expected key=value (e.g. victims.0.epochs=3)")
        key, value = item.split("=", 1)
        try:
            parsed.append((key.strip(), yaml.safe_load(value) if value != "" else None))
        except yaml.YAMLError as err:
            raise UserError(f"bad command-line override '{item}': {err}") from None
    return parsed


def load_tree(path: str | Path, overrides: Sequence[str] = (), overlays: Sequence[str | Path] = ()
              ) -> Dict[str, Any]:
    """The merged recipe as a plain mapping, interpolations resolved, not yet checked."""
    path = Path(path)
    raw = _read_yaml(path)
    for overlay in overlays:
        raw = _merge(raw, _read_yaml(Path(overlay)), Path(overlay))
    if "name" not in raw:
        raw.name = path.stem
    parsed = parse_overrides(overrides)
    # switching the data set on the command line drops the recipe's arguments for the old one
    # (``data.name=llava_json data.train=... data.test=...`` on a synthetic recipe)
    new_name = dict(parsed).get("data.name")
    if new_name is not None and new_name != (raw.get("data") or {}).get("name"):
        raw.data = {}
    for key, value in parsed:
        try:
            OmegaConf.update(raw, key, value, merge=True, force_add=True)
        except (OmegaConfBaseException, IndexError, ValueError, TypeError, AttributeError) as err:
            raise UserError(f"bad command-line override '{key}={value}': {err}") from None
    try:
        tree = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: key '{getattr(err, 'full_key', '?')}': {err.msg if hasattr(err, 'msg') else err}"
                        ) from None
    return tree  # type: ignore[return-value]


def load_recipe(path: str | Path, overrides: Sequence[str] = (), overlays: Sequence[str | Path] = ()) -> RunSpec:
    """Read, merge and check a recipe: the resolved spec tree, or a ``UserError`` naming the file and key."""
    return resolve(load_tree(path, overrides, overlays), source=str(path))


def dump(spec: RunSpec) -> str:
    """The resolved recipe as YAML: every default written out, loadable again to the same spec."""
    return yaml.safe_dump(to_tree(spec), sort_keys=False, default_flow_style=None, width=118)
