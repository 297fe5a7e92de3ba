"""Pre-trained tiny twins: a tiny model trained for a few CPU minutes on the synthetic VQA generator.

Victims in the paper fine-tune a model that already sees; a random-init tiny model does not, and LoRA or
projector-only fine-tuning of it would be meaningless. The twin is trained (full fine-tuning through the same
engine) on question types that the quickstart does not ask, so zero-shot stays near chance there. Weights are
cached (``twin_path``) keyed by the tiny config, these settings and the seed, and the training is deterministic,
so every machine gets the same twin. ``engine/build.py`` builds a model with its twin (``load_or_pretrain``):
trained on first use, or (a report) only read from the cache.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from mmguard.config.sections import FinetuneParams, TrainerParams
from mmguard.core.errors import UserError
from mmguard.core.io import atomic_path
from mmguard.data.synthetic import PRETRAIN_TYPES, generate
from mmguard.models.zoo import cache_dir, config_key
from mmguard.victims.full import FullVictim

# What the tiny twins are pre-trained on; part of their cache key. ``version`` changes whatever else retrains them:
# 3 since a model's initial weights depend on its name (``models/zoo.py: init_seed``).
PRETRAIN = {"n": 2000, "epochs": 12, "lr": 3e-3, "batch_size": 32, "types": list(PRETRAIN_TYPES), "version": 3}


def twin_path(adapter, seed: int, settings: Optional[Dict[str, Any]] = None) -> Path:
    """Where a tiny model's pre-trained twin is cached: keyed by its config, the pre-training settings and seed."""
    key = hashlib.sha256(json.dumps(settings or PRETRAIN, sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "zoo" / f"{adapter.name}-{config_key(adapter)}-{key}-s{seed}.safetensors"


def load_twin(adapter, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(adapter.model, str(path), strict=False)
    if unexpected or missing:
        raise UserError(f"cached twin {path} does not fit {adapter.name}: missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}; delete it to re-train")


def pretrain(adapter, seed: int = 0, settings=None, progress: bool = True) -> dict:
    """Full fine-tuning of a random-init tiny model on the pre-training question types."""
    from mmguard.engine.finetune import evaluate, finetune

    s = settings or PRETRAIN
    data = generate(s["n"], seed=10_000 + seed, types=tuple(s["types"]), prefix="pre")
    held = generate(120, seed=20_000 + seed, types=tuple(s["types"]), prefix="preval")
    params = FinetuneParams(epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"], warmup_ratio=0.05)
    trainer = TrainerParams(progress_bar=progress)
    finetune(adapter, FullVictim(), params, data, seed=seed, trainer=trainer)  # always full: not a recipe's choice
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    return evaluate(adapter, held, trainer=trainer)


def load_or_pretrain(adapter, seed: int = 0, settings=None, progress: bool = True, train: bool = True) -> Path:
    """The twin's weights into ``adapter`` (frozen, in eval mode): from the cache, or trained now and cached
    (``train`` false: never trained here, a UserError when it is not cached)."""
    path = twin_path(adapter, seed, settings or PRETRAIN)
    if not path.exists() and not train:
        raise UserError(f"the pre-trained twin of {adapter.name} (seed {seed}) is not cached at {path}; "
                        f"make it with 'mmguard zoo pretrain {adapter.name} --seed {seed}'")
    if not path.exists():
        print(f"[mmguard] pre-training the tiny twin {adapter.name} (seed {seed}); cached at {path}")
        result = pretrain(adapter, seed, settings, progress)
        print(f"[mmguard] {adapter.name} twin: accuracy {result['accuracy']:.3f} on held-out pre-training types")
        from safetensors.torch import save_model

        with atomic_path(path) as tmp:  # a killed run never leaves half a twin
            # save_model handles tied embeddings, which a plain state-dict save refuses
            save_model(adapter.model, str(tmp), metadata={"accuracy": f"{result['accuracy']:.4f}"})
    else:
        load_twin(adapter, path)
    adapter.model.eval()
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    return path
