"""MMGuard: multimodal error-minimizing protection with cross-modal binding disruption (METHOD.md).

``mmguard_bph`` hijacks the bridge path (answer -> trigger -> perturbation tokens), ``mmguard_crs`` shifts
the answer's attention away from where it goes on clean inputs; the ``_max`` variants maximize l_train.
"""
from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS


class MMGuard(Attack):
    text = True


@ATTACKS.register("mmguard_bph")
class MMGuardBPH(MMGuard):
    name = "mmguard_bph"
    binding = "bph"


@ATTACKS.register("mmguard_crs")
class MMGuardCRS(MMGuard):
    name = "mmguard_crs"
    binding = "crs"


@ATTACKS.register("mmguard_bph_max")
class MMGuardBPHMax(MMGuardBPH):
    name = "mmguard_bph_max"
    maximize = True


@ATTACKS.register("mmguard_crs_max")
class MMGuardCRSMax(MMGuardCRS):
    name = "mmguard_crs_max"
    maximize = True
