"""Models as the engine builds them from a ``ModelSpec``: the adapter, a tiny model's pre-trained twin (trained
on first use), its dtype and device."""
from __future__ import annotations

from mmguard.engine.pretrain import load_or_pretrain
from mmguard.models.zoo import ModelSpec, build_model, is_tiny


def build_adapter(spec: ModelSpec, progress: bool = True):
    adapter = build_model(spec.name, seed=spec.seed, pretrained=spec.pretrained,
                          trust_remote_code=spec.trust_remote_code, dtype=spec.dtype)
    if is_tiny(spec.name) and spec.pretrained:
        load_or_pretrain(adapter, seed=spec.seed, progress=progress)
    if spec.device is not None:
        adapter.model.to(spec.device)
    return adapter
