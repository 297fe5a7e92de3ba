"""Pre-trained tiny twins: a tiny model trained for a few CPU minutes on the synthetic VQA generator.

Victims in the paper fine-tune a model that already sees; a random-init tiny model does not, and LoRA or
projector-only fine-tuning of it would be meaningless. The twin is trained (full fine-tuning through the
same engine) on question types that the quickstart does not ask, so zero-shot stays near chance there.
Weights are cached as safetensors keyed by the tiny config, the pre-training settings and the seed, and the
training is deterministic, so every machine gets the same twin.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from safetensors.torch import load_model, save_model

from mmguard.data.synthetic import PRETRAIN_TYPES, generate
from mmguard.models.zoo import cache_dir, config_key

PRETRAIN = {"n": 2000, "epochs": 12, "lr": 3e-3, "batch_size": 32, "types": list(PRETRAIN_TYPES), "version": 2}


def twin_path(adapter, seed: int, settings=None) -> Path:
    settings = settings or PRETRAIN
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return cache_dir() / "zoo" / f"{adapter.name}-{config_key(adapter)}-{key}-s{seed}.safetensors"


def pretrain(adapter, seed: int = 0, settings=None, progress: bool = True) -> dict:
    """Full fine-tuning of a random-init tiny model on the pre-training question types."""
    from mmguard.engine.finetune import DEFAULT_TRAINER, evaluate, finetune

    s = settings or PRETRAIN
    data = generate(s["n"], seed=10_000 + seed, types=tuple(s["types"]), prefix="pre")
    held = generate(120, seed=20_000 + seed, types=tuple(s["types"]), prefix="preval")
    victim = SimpleNamespace(name="full", rank=8, alpha=16, dropout=0.0, lr=s["lr"], weight_decay=0.0,
                             warmup_ratio=0.05, epochs=s["epochs"], batch_size=s["batch_size"], grad_accum=1,
                             precision="32-true")
    trainer_cfg = SimpleNamespace(**{**vars(DEFAULT_TRAINER), "progress_bar": progress})
    finetune(adapter, victim, data, seed=seed, trainer_cfg=trainer_cfg)
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    return evaluate(adapter, held, trainer_cfg=trainer_cfg)


def load_or_pretrain(adapter, seed: int = 0, settings=None, progress: bool = True) -> Path:
    path = twin_path(adapter, seed, settings)
    if not path.exists():
        print(f"[mmguard] pre-training the tiny twin {adapter.name} (seed {seed}); cached at {path}")
        result = pretrain(adapter, seed, settings, progress)
        print(f"[mmguard] {adapter.name} twin: accuracy {result['accuracy']:.3f} on held-out pre-training types")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
            tmp_path = tmp.name
        # save_model handles tied embeddings, which a plain state-dict save refuses
        save_model(adapter.model, tmp_path, metadata={"accuracy": f"{result['accuracy']:.4f}"})
        os.replace(tmp_path, path)  # atomic: a killed run never leaves half a twin
    else:
        missing, unexpected = load_model(adapter.model, str(path), strict=False)
        if unexpected or missing:
            raise RuntimeError(f"cached twin {path} does not fit {adapter.name}: missing {sorted(missing)[:3]}, "
                               f"unexpected {sorted(unexpected)[:3]}; delete it to re-train")
    adapter.model.eval()
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    return path


