"""``random``: uniform noise in the L-inf budget; the sanity baseline (should not protect)."""
from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS


@ATTACKS.register("random")
class RandomNoise(Attack):
    name = "random"
    optimize = False
    defaults = {"init": "uniform"}
