"""``trigger_text``: an error-minimizing text trigger only (HotFlip), no image perturbation."""
from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS


@ATTACKS.register("trigger_text")
class TriggerText(Attack):
    image = False
    text = True
