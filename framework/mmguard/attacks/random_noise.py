"""``random``: uniform noise in the L-inf budget; the sanity baseline (should not protect)."""
import dataclasses

from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS


@ATTACKS.register("random")
class RandomNoise(Attack):
    optimize = False
    loop_defaults = {"init": "uniform"}

    @dataclasses.dataclass
    class Params:  # nothing is optimized, so there is no objective to parametrize
        pass
