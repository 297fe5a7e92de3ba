"""Building models by spec: registered tiny families, or a checkpoint id/path loaded with from_pretrained.

``register_family("llava")`` on an adapter class registers it for ``config.model_type == "llava"`` and adds
its tiny sizes to the MODELS registry (``tiny-llava``, ``tiny-llava-wide``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Type

import torch

from mmguard.core.registry import MODELS

FAMILIES: Dict[str, Type] = {}

# The two sizes every family offers (gray-box threat models pair them). Families pass them to ``tiny``.
TINY_SIZES: Dict[str, Dict[str, int]] = {"": {}, "-wide": {"hidden": 96, "layers": 3}}


def register_family(model_type: str, *aliases: str):
    def deco(cls):
        FAMILIES[model_type] = cls
        for alias in aliases:
            FAMILIES[alias] = cls
        for suffix, kwargs in TINY_SIZES.items():
            name = f"tiny-{cls.family}{suffix}"
            MODELS.add(name, _tiny_builder(cls, name, kwargs), family=cls.family, tiny=True)
        return cls

    return deco


def _tiny_builder(cls, name: str, kwargs: Dict[str, int]):
    def build(seed: int = 0, **overrides: Any):
        torch.manual_seed(seed)
        return cls.tiny(name, **{**kwargs, **overrides})

    build.__name__ = name
    return build


def cache_dir() -> Path:
    root = os.environ.get("MMGUARD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mmguard")
    return Path(root)


def config_key(adapter) -> str:
    """A short hash of the model's config: cached weights are keyed by it, so a changed tiny config never loads
    stale weights."""
    cfg = adapter.model.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "_attn_implementation_autoset", "dtype", "torch_dtype"):
        cfg.pop(k, None)
    blob = json.dumps(cfg, sort_keys=True, default=str) + str(len(adapter.tokenizer))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_model(name: str, seed: int = 0, pretrained: bool = False, trust_remote_code: bool = False,
                dtype: Optional[str] = None, **overrides: Any):
    """Build an adapter from a spec.

    ``name`` is a registered tiny model (``tiny-llava``) or a checkpoint id/path whose family is read from
    ``config.model_type``. ``pretrained=True`` on a tiny model loads (or first trains) its pre-trained twin.
    """
    if name in MODELS:
        adapter = MODELS.get(name)(seed=seed, **overrides)
        if pretrained:
            from mmguard.models.pretrain import load_or_pretrain

            load_or_pretrain(adapter, seed=seed)
        return adapter
    if name.startswith("tiny-"):
        raise KeyError(MODELS.unknown_message(name))
    return load_checkpoint(name, trust_remote_code=trust_remote_code, dtype=dtype)


def load_checkpoint(path: str, trust_remote_code: bool = False, dtype: Optional[str] = None):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ValueError(f"model '{path}' is neither a registered model ({', '.join(MODELS.names())}) nor a "
                         f"loadable checkpoint: {err}") from err
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ValueError(f"checkpoint '{path}' has model_type '{config.model_type}', which no family adapter "
                         f"handles; known: {', '.join(sorted(FAMILIES))}")
    torch_dtype = getattr(torch, dtype) if dtype else "auto"
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                        dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                         backend="pil")
    return family(model, tokenizer, image_processor, path)
