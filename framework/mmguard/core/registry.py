"""One Registry type and one registry per component kind.

Components register themselves by name with a decorator (timm's ``register_model`` habit); recipes name them.
Packages outside mmguard add components through the ``mmguard.plugins`` entry-point group: each entry point
names a module, and importing that module runs its ``@REGISTRY.register`` decorators.
"""
from __future__ import annotations

import difflib
import fnmatch
from importlib import metadata
from typing import Any, Callable, Dict, Iterator, List, Optional

from mmguard.core.errors import UserError


class RegistryError(UserError):
    """An unknown or duplicate name; the message lists what is registered."""


class Registry:
    """A name -> component map with decorator registration and did-you-mean lookups."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Any] = {}
        self._meta: Dict[str, Dict[str, Any]] = {}

    def register(self, name: Optional[str] = None, *, override: bool = False, **meta: Any) -> Callable:
        """Decorator: ``@ATTACKS.register("em_image")``; extra keyword arguments are kept as metadata. A class
        registered gets its name as ``name`` (written once, in the decorator)."""

        def deco(obj: Any) -> Any:
            key = name or getattr(obj, "name", None) or obj.__name__
            if key in self._entries and not override and self._entries[key] is not obj:
                raise RegistryError(f"{self.kind} '{key}' is already registered by {self._entries[key]!r}")
            if isinstance(obj, type):
                own = vars(obj).get("name")
                if own not in (None, key):
                    raise RegistryError(f"{self.kind} '{key}': {obj.__name__} says its name is '{own}'")
                obj.name = key
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def add(self, name: str, obj: Any, **meta: Any) -> Any:
        return self.register(name, **meta)(obj)

    def get(self, name: str) -> Any:
        load_plugins()
        if name not in self._entries:
            raise RegistryError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {', '.join(self.names())}"

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def meta(self, name: str) -> Dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self, pattern: str = "*") -> List[str]:
        load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


MODELS = Registry("model")
DATASETS = Registry("dataset")
ATTACKS = Registry("attack")
VICTIMS = Registry("victim")
PROBES = Registry("probe")

REGISTRIES: Dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "attacks": ATTACKS,
    "victims": VICTIMS,
    "probes": PROBES,
}

_PLUGINS_LOADED = False
_BUILTINS = (
    "mmguard.models",
    "mmguard.data",
    "mmguard.attacks",
    "mmguard.victims",
    "mmguard.probes",
)


def load_plugins() -> None:
    """Import the built-in component packages and every ``mmguard.plugins`` entry point, once."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import importlib

    for module in _BUILTINS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a kind with no components yet
            if err.name != module:
                raise
    for ep in metadata.entry_points(group="mmguard.plugins"):
        ep.load()
