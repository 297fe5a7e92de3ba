"""Projector + LoRA: the projector trains fully and the language model through LoRA."""
from mmguard.core.registry import VICTIMS
from mmguard.victims.base import projector_modules
from mmguard.victims.lora import AdapterVictim, inject_lora, mark_lora_trainable


@VICTIMS.register("projector_lora")
class ProjectorLoRAVictim(AdapterVictim):
    def prepare(self, adapter):
        self.freeze(adapter.model)
        inject_lora(adapter, self.rank, self.alpha, self.dropout)
        mark_lora_trainable(adapter.model)
        for module in projector_modules(adapter):
            for p in module.parameters():
                p.requires_grad_(True)
        return self.trainable(adapter.model)
