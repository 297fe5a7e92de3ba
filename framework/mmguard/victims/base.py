"""Fine-tuning recipes: which parameters of an LVLM train, and how adapters are attached.

A victim prepares an adapter's model in place (freezing, injecting peft adapters) and returns the
trainable parameters. Injection keeps module paths unchanged (peft's ``inject_adapter_in_model``), so the
adapter's attention taps and processors keep working on the fine-tuned model.
"""
from __future__ import annotations

from typing import List

from torch import nn


class Victim:
    """What trains in a fine-tuning run. Subclasses declare their own parameters in ``__init__`` (the LoRA
    family: rank, alpha, dropout); full and projector-only fine-tuning have none."""

    name = ""

    def prepare(self, adapter) -> List[nn.Parameter]:
        raise NotImplementedError

    @staticmethod
    def freeze(model: nn.Module) -> None:
        for p in model.parameters():
            p.requires_grad_(False)

    @staticmethod
    def trainable(model: nn.Module) -> List[nn.Parameter]:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError("the victim left no trainable parameter")
        return params


def language_linear_names(adapter, targets) -> List[str]:
    """Full module names of the language model's linear layers whose last name part is in ``targets``."""
    lm_ids = {id(m) for m in adapter.language_model.modules()}
    names = [n for n, m in adapter.model.named_modules()
             if id(m) in lm_ids and isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise RuntimeError(f"{adapter.name}: no language-model linear layer named {targets}")
    return names


def projector_modules(adapter) -> List[nn.Module]:
    mods = []
    for name in adapter.projector_names:
        mod = adapter.model
        for part in name.split("."):
            mod = getattr(mod, part, None)
            if mod is None:
                break
        if mod is None:  # search by last name part anywhere in the model
            mod = next((m for n, m in adapter.model.named_modules() if n.endswith(name)), None)
        if mod is not None:
            mods.append(mod)
    if not mods:
        raise RuntimeError(f"{adapter.name}: no projector module among {adapter.projector_names}")
    return mods


