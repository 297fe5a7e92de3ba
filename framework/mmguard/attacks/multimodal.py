"""``multimodal``: error-minimizing image perturbation and text trigger together, without binding losses."""
from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS


@ATTACKS.register("multimodal")
class Multimodal(Attack):
    text = True
