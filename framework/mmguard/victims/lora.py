"""LoRA on the language model's attention and MLP projections (peft)."""
from __future__ import annotations

from typing import Annotated

from peft import LoraConfig, inject_adapter_in_model

from mmguard.core.constants import VICTIM_LORA_DROPOUT
from mmguard.core.params import PositiveFloat, PositiveInt, between
from mmguard.core.registry import VICTIMS
from mmguard.victims.base import Victim, language_linear_names


def inject_lora(adapter, rank: int, alpha: int, dropout: float, use_dora: bool = False,
                adapter_name: str = "default") -> None:
    targets = language_linear_names(adapter, adapter.lora_targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                        use_dora=use_dora, bias="none")
    inject_adapter_in_model(config, adapter.model, adapter_name=adapter_name)


def mark_lora_trainable(model) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


class AdapterVictim(Victim):
    """A victim that trains low-rank adapters: rank, alpha (scale alpha / rank) and dropout, as peft names them."""

    def __init__(self, rank: PositiveInt = 8, alpha: PositiveFloat = 16,
                 dropout: Annotated[float, between(0, 1, hi_open=True)] = VICTIM_LORA_DROPOUT):
        self.rank, self.alpha, self.dropout = rank, alpha, dropout


@VICTIMS.register("lora")
class LoRAVictim(AdapterVictim):
    use_dora = False

    def prepare(self, adapter):
        self.freeze(adapter.model)
        inject_lora(adapter, self.rank, self.alpha, self.dropout, use_dora=self.use_dora)
        mark_lora_trainable(adapter.model)
        return self.trainable(adapter.model)
