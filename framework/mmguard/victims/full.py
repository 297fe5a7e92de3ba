"""Full fine-tuning: every parameter trains."""
from mmguard.core.registry import VICTIMS
from mmguard.victims.base import Victim


@VICTIMS.register("full")
class FullVictim(Victim):
    def prepare(self, adapter):
        for p in adapter.model.parameters():
            p.requires_grad_(True)
        return self.trainable(adapter.model)
