"""The protection loop's surrogate side: its LoRA adapter (named ``surrogate``, re-initialized each round), the
layers the objective taps, and the stop rule's teacher-forced train accuracy."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from mmguard.data.sample import Sample

ADAPTER = "surrogate"


def lora_params(adapter) -> List[torch.nn.Parameter]:
    return [p for n, p in adapter.model.named_parameters() if "lora_" in n and f".{ADAPTER}" in n]


def lora_state(adapter) -> Dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in adapter.model.named_parameters() if "lora_" in n and f".{ADAPTER}" in n}


def reset_lora(adapter) -> None:
    for m in adapter.model.modules():
        if hasattr(m, "reset_lora_parameters") and ADAPTER in getattr(m, "lora_A", {}):
            m.reset_lora_parameters(ADAPTER, True)


def keep_tapped_layers(adapter, layers: Sequence[int]) -> None:
    """Gradient checkpointing recomputes a layer's forward in the backward pass, after the attention tap has been
    taken off; the few layers the objective taps (the first |K|) keep their activations instead."""
    tapped = [adapter.attention_modules[k] for k in layers]
    for module in adapter.model.modules():
        if getattr(module, "gradient_checkpointing", False) and any(
                t is m for t in tapped for m in module.modules()):
            module.gradient_checkpointing = False


def answer_accuracy(adapter, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
                    images: Sequence[torch.Tensor], offsets: Sequence[Optional[int]]) -> torch.Tensor:
    """(B,) 1.0 where teacher-forced argmax predicts every answer token: the stop rule's train accuracy."""
    encoded = [adapter.encode(s, trigger=t, trigger_at=o) for s, t, o in zip(samples, triggers, offsets)]
    batch = adapter.to_device(adapter.collate(encoded, images))
    with torch.no_grad():
        answers = adapter.answer_logits(batch)
    wrong = (answers.logits.argmax(-1) != answers.targets).float()
    return (wrong.new_zeros(answers.batch_size).index_add(0, answers.sample, wrong) == 0).float().cpu()
