"""Image-only error-minimizing noise (Huang et al. 2021, min-min), sample-wise and class-wise.

Huang's schedule: step 0.8/255, 20 PGD steps per 10 training steps, stop at 99% train accuracy.
"""
from mmguard.attacks.base import Attack
from mmguard.core.registry import ATTACKS

# Huang et al. train one model throughout (no re-initialization between noise updates)
HUANG = {"alpha": 0.8 / 255, "P": 20, "Q": 10, "R": 10, "reinit": False, "init": "uniform"}


@ATTACKS.register("em_image")
class ErrorMinimizingImage(Attack):
    loop_defaults = HUANG


@ATTACKS.register("em_image_classwise")
class ErrorMinimizingImageClasswise(ErrorMinimizingImage):
    classwise = True
