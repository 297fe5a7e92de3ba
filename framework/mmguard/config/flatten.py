"""A results row's configuration as flat dotted keys, from a run's resolved recipe tree.

W&B's run table filters and groups by config keys, and ``mmguard collect`` groups rows by the keys that differ
between run folders; both need one row's settings without list positions that change from recipe to recipe. A
row is (attack, victim, probe) by label: its config holds the attack entry (``attack.*``: name, label, surrogates,
loop and objective parameters), the victim (``victim.*``), the probe (``probe.*``), and the recipe's shared
sections (``seed``, ``data.*``, ``eval.*``, ``trainer.*``). Reference rows (zero_shot, clean) have only
``attack.label`` and ``attack.name``; a protection row has no victim and no probe.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

#: the rows whose "attack" is a reference, not an attack entry of the recipe
REFERENCE_ROWS = ("zero_shot", "clean")
#: recipe sections shared by every row of a run
SHARED = ("data", "eval", "trainer")


def flatten(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested mappings -> ``{"a.b.c": leaf}``; lists of mappings are indexed (``surrogates.0.name``), lists of
    plain values stay lists (one config value)."""
    out: Dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = list(value) if isinstance(value, tuple) else value
    return out


def _entry(entries: Any, label: Optional[str], what: str, strict: bool) -> Dict[str, Any]:
    for e in entries or []:
        if isinstance(e, Mapping) and e.get("label", e.get("name")) == label:
            return dict(e)
    if not strict:
        return {"label": label}
    raise KeyError(f"the recipe has no {what} labelled '{label}'")


def row_config(tree: Any, attack: Optional[str] = None, victim: Optional[str] = None,
               probe: Optional[str] = None, strict: bool = True) -> Dict[str, Any]:
    """The flat config of the row (``attack``, ``victim``, ``probe``: labels as in results.json) of a run whose
    resolved recipe is ``tree`` (a ``RunSpec``, or its ``to_tree`` mapping as written to recipe.yaml). A label
    the recipe does not have is a KeyError, or with ``strict=False`` just its label (a row that ``mmguard
    finetune`` added under a name of its own)."""
    if not isinstance(tree, Mapping):
        from mmguard.config.tree import to_tree

        tree = to_tree(tree)
    out: Dict[str, Any] = {"recipe": tree.get("name"), "seed": tree.get("seed")}
    for section in SHARED:
        out.update(flatten(tree.get(section) or {}, f"{section}."))
    if attack is not None:
        if attack in REFERENCE_ROWS:
            out.update({"attack.label": attack, "attack.name": attack})
        else:
            entry = _entry(tree.get("attacks"), attack, "attack", strict)
            surrogates = [s["name"] if isinstance(s, Mapping) else s for s in entry.get("surrogates") or []]
            out.update(flatten(entry, "attack."))
            out["attack.surrogate_models"] = "+".join(surrogates)
    if victim is not None:
        entry = _entry(tree.get("victims"), victim, "victim", strict)
        entry.pop("probes", None)  # which probes a victim runs is not a setting of any one row
        out.update(flatten(entry, "victim."))
    if probe is not None:
        out.update(flatten(_entry(tree.get("probes"), probe, "probe", strict), "probe."))
    return out
