"""The threat model of a victim against an attack's surrogates, decided from the weights they start from.

A model's starting weights are fixed by its spec without building it (``initial_weights``): a checkpoint's or a
registered pre-trained model's own weights, a tiny model's pre-trained twin of its seed, or a random
initialization drawn from its name and seed (``zoo.init_seed``). White-box: the victim starts from a surrogate's
weights; gray-box: from other weights of a surrogate's family; black-box: the surrogates are other families.
``tests/models/test_init.py`` checks the keys against the built models' tensors where building is cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

from mmguard.core.model_names import is_tiny
from mmguard.core.registry import MODELS


def _field(model: Any, key: str, default: Any = None) -> Any:
    return model.get(key, default) if isinstance(model, Mapping) else getattr(model, key, default)


def _name(model: Any) -> str:
    name = str(_field(model, "name"))
    local = Path(name).expanduser()
    return str(local.resolve()) if name not in MODELS and local.exists() else name  # one checkpoint, one name


def initial_weights(model: Any) -> Tuple:
    """A key two models share exactly when they start from the same weights. ``model``: a ``ModelSpec`` or its
    mapping (a recipe's surrogate entry), its seed resolved. dtype and device do not count: they round or move the
    same weights."""
    name, pretrained = _name(model), bool(_field(model, "pretrained", True))
    if pretrained and not is_tiny(name):
        return (name, "pretrained")  # its own weights: the seed draws nothing
    seed = _field(model, "seed")
    return (name, "twin" if pretrained else "init", None if seed is None else int(seed))


def model_family(name: str) -> Optional[str]:
    """The family of a registered model (``tiny-llava-wide`` -> llava) or of a checkpoint, from the model_type of
    its config.json (a local folder's, or a hub id's in the local cache; no weights are read); None when there is
    no config to read or no family adapter handles it."""
    if name in MODELS:
        return MODELS.meta(name).get("family")
    config = _config_file(name)
    if config is None:
        return None
    import json

    from mmguard.models.zoo import FAMILIES

    try:
        raw = json.loads(config.read_text())
    except (OSError, ValueError):
        return None
    vision = (raw.get("vision_config") or {}).get("model_type")
    adapter = FAMILIES.get(f"{raw.get('model_type')}+{vision}") or FAMILIES.get(raw.get("model_type"))
    return getattr(adapter, "family", None)


def _config_file(name: str) -> Optional[Path]:
    local = Path(name).expanduser() / "config.json"
    if local.is_file():
        return local
    if name.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(name, "config.json")
    return Path(hit) if isinstance(hit, str) else None


def threat_model(surrogates: Sequence[Any], victim: Any) -> str:
    """white-box, gray-box or black-box for a victim model against an attack's surrogate models (specs or their
    mappings); "unknown" where a family is not known without loading a checkpoint, or there are no surrogates."""
    if not surrogates:
        return "unknown"
    if initial_weights(victim) in {initial_weights(s) for s in surrogates}:
        return "white-box"
    family = model_family(_name(victim))
    families = [model_family(_name(s)) for s in surrogates]
    if family is not None and family in families:
        return "gray-box"
    if family is None or None in families:
        return "unknown"
    return "black-box"
