"""Reading one recipe value at a key: a mapping, a list, a typed value, a row label. Each refusal is one
``UserError`` line that names the key."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping

from mmguard.core.errors import UserError
from mmguard.core.params import coerce

LABEL_SAFE = re.compile(r"^[^\s/\\:*?\"<>|][^\\:*?\"<>|]*$")


def mapping_at(value: Any, key: str) -> Dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"key '{key}': expected a mapping, got {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise UserError(f"key '{key}.{bad[0]}': keys must be names")
    return dict(value)


def list_at(value: Any, key: str) -> List[Any]:
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        if isinstance(value, str) and key == "victim_recipes":
            return [value]
        raise UserError(f"key '{key}': expected a list, got {value!r}")
    return list(value)


def value_at(value: Any, tp: type, key: str) -> Any:
    try:
        return coerce(value, tp)
    except ValueError as err:
        raise UserError(f"key '{key}': {err}") from None


def coerce_list(value: Any, key: str, tp: type = str) -> List[Any]:
    return value_at(value, List[tp], key)


def label_at(value: Any, key: str, slash: bool = False) -> str:
    """Row labels name files and W&B runs: printable, no path separators beyond a victim's model/name."""
    label = value_at(value, str, key)
    check = label.replace("/", "_") if slash else label
    if not label or not LABEL_SAFE.match(check) or (not slash and "/" in label):
        raise UserError(f"key '{key}': '{label}' is not a usable label (letters, digits, . _ - + and spaces)")
    return label


def unique_at(labels: List[str], key: str, message: str) -> None:
    seen = set()
    for label in labels:
        if label in seen:
            raise UserError(f"key '{key}': " + message.format(label))
        seen.add(label)
