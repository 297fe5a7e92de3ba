"""What a model name points to, found without loading model code: a registered model (a tiny random-init family or
a registered pre-trained one), a local checkpoint folder, or a hub id whose config is in the local Hugging Face
cache. ``config/spec.py`` checks a recipe's model names with it before any work; ``models/zoo.py`` builds by it."""
from __future__ import annotations

from pathlib import Path

from mmguard.core.errors import UserError
from mmguard.core.registry import MODELS


def is_tiny(name: str) -> bool:
    """A registered tiny random-init model (the registered pre-trained ones, such as effnet-gemma3-270m, are not)."""
    return name in MODELS and bool(MODELS.meta(name).get("tiny"))


def resolve_model_name(name: str) -> str:
    """Where a model name points: ``tiny`` (registered), ``path`` (a local checkpoint folder) or ``hub`` (a hub
    id whose config is in the local Hugging Face cache). Anything else is refused before any work starts."""
    if name in MODELS:
        return "tiny"
    if name.startswith("tiny-"):
        raise UserError(MODELS.unknown_message(name))
    local = Path(name).expanduser()
    if local.exists():
        if (local / "config.json").is_file():
            return "path"
        raise UserError(f"model '{name}' is a local path without a config.json: not a checkpoint folder")
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(name, "config.json") if name.count("/") == 1 else None
    if isinstance(hit, str):
        return "hub"
    raise UserError(f"model '{name}' is neither a registered tiny model (mmguard list models), a local checkpoint "
                    f"folder, nor a hub id in the local Hugging Face cache (download it first: hf download {name})")
