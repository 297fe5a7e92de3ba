"""Models at their initial weights by name: registered tiny families, or a checkpoint id/path loaded with
from_pretrained.

``register_family("llava")`` on an adapter class registers it for ``config.model_type == "llava"`` and adds
its tiny sizes to the MODELS registry (``tiny-llava``, ``tiny-llava-wide``). What a name points to is found by
``core/model_names.py`` (a recipe's names are checked by it before any work). A tiny model's pre-trained twin is
the engine's (``engine/pretrain.py`` trains, caches and loads it); a model as a recipe names it (``ModelSpec``)
is built by ``engine/build.py``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Type

import torch

from mmguard.core.errors import UserError
from mmguard.core.model_names import is_tiny, resolve_model_name
from mmguard.core.registry import MODELS

FAMILIES: Dict[str, Type] = {}

# The two sizes every family offers (gray-box threat models pair them). Families pass them to ``tiny``.
TINY_SIZES: Dict[str, Dict[str, int]] = {"": {}, "-wide": {"hidden": 96, "layers": 3}}
DTYPES = ("float32", "bfloat16", "float16")


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


def init_seed(name: str, seed: int) -> int:
    """The torch seed a model's initial weights are drawn with: ``seed`` mixed with the model's name by a stable
    hash (not Python's salted ``hash``). Seeding with ``seed`` alone gave every model at a seed the same random
    stream, so two models whose first tensors have equal shapes started equal: tiny-llava and tiny-llava-wide
    shared their whole vision tower, and a gray-box victim began as its surrogate's."""
    digest = hashlib.sha256(f"{name}\0{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: what torch.manual_seed takes everywhere


def _tiny_builder(cls, name: str, kwargs: Dict[str, int]):
    def build(seed: int = 0, **overrides: Any):
        torch.manual_seed(init_seed(name, seed))
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


@functools.lru_cache(maxsize=None)
def count_language_layers(name: str, trust_remote_code: bool = False) -> int:
    """How many self-attention layers the language model of ``name`` has (no weights are loaded for checkpoints)."""
    if resolve_model_name(name) == "tiny":
        if "layers" in MODELS.meta(name):
            return int(MODELS.meta(name)["layers"])
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random state as it was
            return len(MODELS.get(name)(seed=0).attention_modules)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    text = getattr(config, "text_config", config)
    return int(text.num_hidden_layers)


def build_model(name: str, seed: int = 0, pretrained: bool = True, trust_remote_code: bool = False,
                dtype: Optional[str] = None, **tiny_overrides: Any):
    """An adapter for ``name``: a registered tiny model at random init (its twin's weights are the engine's
    business), or a checkpoint (its weights, or its architecture at random init with ``pretrained=False``)."""
    if resolve_model_name(name) == "tiny" and not is_tiny(name):  # a registered pre-trained model builds itself
        return MODELS.get(name)(seed=seed, pretrained=pretrained, dtype=dtype)
    if resolve_model_name(name) == "tiny":
        adapter = MODELS.get(name)(seed=seed, **tiny_overrides)
        if dtype is not None:
            adapter.model.to(getattr(torch, dtype))
        return adapter
    return load_checkpoint(name, seed=seed, pretrained=pretrained, trust_remote_code=trust_remote_code, dtype=dtype)


def load_checkpoint(path: str, seed: int = 0, pretrained: bool = True, trust_remote_code: bool = False,
                    dtype: Optional[str] = None):
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"model '{path}': its config cannot be read ({err})") from None
    vision = getattr(getattr(config, "vision_config", None), "model_type", None)
    family = FAMILIES.get(f"{config.model_type}+{vision}") or FAMILIES.get(config.model_type)
    if family is None:
        raise UserError(f"model '{path}' has model_type '{config.model_type}', which no family adapter handles; "
                        f"known: {', '.join(sorted(FAMILIES))}")
    torch_dtype = getattr(torch, dtype) if dtype else "auto"
    if pretrained:
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                            dtype=torch_dtype)
    else:  # the architecture at random init (benchmarks at real size without real weights)
        torch.manual_seed(init_seed(path, seed))
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=trust_remote_code,
                                                        dtype=None if dtype is None else torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                         backend="pil")
    return family(model, tokenizer, image_processor, path)
