"""Pre-trained tiny twins: a tiny model trained for a few CPU minutes on the synthetic VQA generator.

Victims in the paper fine-tune a model that already sees; a random-init tiny model does not, and LoRA or
projector-only fine-tuning of it would be meaningless. The twin is trained (full fine-tuning through the same
engine) on question types that the quickstart does not ask, so zero-shot stays near chance there. Weights are
cached (``models/zoo.py: twin_path``) keyed by the tiny config, these settings and the seed, and the training is
deterministic, so every machine gets the same twin.
"""
from __future__ import annotations

from pathlib import Path

from mmguard.config.sections import FinetuneParams, TrainerParams
from mmguard.core.io import atomic_path
from mmguard.core.registry import VICTIMS
from mmguard.data.synthetic import generate
from mmguard.models.zoo import TWIN_SETTINGS as PRETRAIN
from mmguard.models.zoo import load_twin, twin_path


def pretrain(adapter, seed: int = 0, settings=None, progress: bool = True) -> dict:
    """Full fine-tuning of a random-init tiny model on the pre-training question types."""
    from mmguard.engine.finetune import evaluate, finetune

    s = settings or PRETRAIN
    data = generate(s["n"], seed=10_000 + seed, types=tuple(s["types"]), prefix="pre")
    held = generate(120, seed=20_000 + seed, types=tuple(s["types"]), prefix="preval")
    params = FinetuneParams(epochs=s["epochs"], lr=s["lr"], batch_size=s["batch_size"], warmup_ratio=0.05)
    trainer = TrainerParams(progress_bar=progress)
    finetune(adapter, VICTIMS.build("full"), params, data, seed=seed, trainer=trainer)
    for p in adapter.model.parameters():
        p.requires_grad_(False)
    return evaluate(adapter, held, trainer=trainer)


def load_or_pretrain(adapter, seed: int = 0, settings=None, progress: bool = True) -> Path:
    path = twin_path(adapter, seed, settings or PRETRAIN)
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
