"""Projector-only fine-tuning: only the multimodal projector trains (LLaVA stage-1 style)."""
from mmguard.core.registry import VICTIMS
from mmguard.victims.base import Victim, projector_modules


@VICTIMS.register("projector")
class ProjectorVictim(Victim):
    def prepare(self, adapter):
        self.freeze(adapter.model)
        for module in projector_modules(adapter):
            for p in module.parameters():
                p.requires_grad_(True)
        return self.trainable(adapter.model)
