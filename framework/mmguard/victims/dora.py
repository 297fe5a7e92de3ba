"""DoRA: weight-decomposed LoRA (peft ``use_dora``) on the same targets as LoRA."""
from mmguard.core.registry import VICTIMS
from mmguard.victims.lora import LoRAVictim


@VICTIMS.register("dora")
class DoRAVictim(LoRAVictim):
    use_dora = True
