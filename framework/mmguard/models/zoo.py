"""Building models by spec: registered tiny families, or a checkpoint id/path loaded with from_pretrained.

``register_family("llava")`` on an adapter class registers it for ``config.model_type == "llava"`` and adds
its tiny sizes to the MODELS registry (``tiny-llava``, ``tiny-llava-wide``). A ``ModelSpec`` names a model as a
recipe does (victims' ``model``, attacks' ``surrogates``); ``resolve_model_name`` checks, before any work, that
the name is a registered tiny model, a local checkpoint folder, or a hub id already in the local cache.
Pre-trained tiny twins are trained by the engine (``engine/pretrain.py``); this module only finds and loads them.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

import torch

from mmguard.core.errors import UserError
from mmguard.core.params import NonNegativeInt
from mmguard.core.registry import MODELS
from mmguard.data.synthetic import PRETRAIN_TYPES

FAMILIES: Dict[str, Type] = {}

# The two sizes every family offers (gray-box threat models pair them). Families pass them to ``tiny``.
TINY_SIZES: Dict[str, Dict[str, int]] = {"": {}, "-wide": {"hidden": 96, "layers": 3}}
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass
class ModelSpec:
    """A model as a recipe names it. ``name``: a registered tiny model, a checkpoint folder or a hub id.
    ``pretrained``: a tiny model's pre-trained twin (cached, trained on first use), a checkpoint's own weights
    (false: the checkpoint's architecture at random init). ``seed``: the random initialization (null: the
    recipe's seed). ``dtype``: the weights' dtype (null: float32 for tiny models, the checkpoint's own otherwise).
    ``device``: where this model lives (null: the trainer's device). ``trust_remote_code``: for checkpoints whose
    code lives in their repository."""

    name: str
    pretrained: bool = True
    seed: Optional[NonNegativeInt] = None
    dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None
    device: Optional[str] = None
    trust_remote_code: bool = False


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


# What the tiny twins are pre-trained on (engine/pretrain.py trains them); part of their cache key. ``version``
# changes whatever else retrains them: 3 since a model's initial weights depend on its name (``init_seed``).
TWIN_SETTINGS = {"n": 2000, "epochs": 12, "lr": 3e-3, "batch_size": 32, "types": list(PRETRAIN_TYPES), "version": 3}


def load_cached_model(name: str, seed: int = 0, pretrained: bool = True):
    """A model without training anything: a tiny model's twin only if it is cached (UserError otherwise)."""
    adapter = build_model(name, seed=seed, pretrained=pretrained)
    if is_tiny(name) and pretrained:
        path = twin_path(adapter, seed)
        if not path.exists():
            raise UserError(f"the pre-trained twin of {name} (seed {seed}) is not cached at {path}; "
                            f"make it with 'mmguard zoo pretrain {name} --seed {seed}'")
        load_twin(adapter, path)
    return adapter


def twin_path(adapter, seed: int, settings: Optional[Dict[str, Any]] = None) -> Path:
    """Where a tiny model's pre-trained twin is cached: keyed by its config, the pre-training settings and seed."""
    key = hashlib.sha256(json.dumps(settings or TWIN_SETTINGS, sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "zoo" / f"{adapter.name}-{config_key(adapter)}-{key}-s{seed}.safetensors"


def load_twin(adapter, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(adapter.model, str(path), strict=False)
    if unexpected or missing:
        raise UserError(f"cached twin {path} does not fit {adapter.name}: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}; delete it to re-train")
