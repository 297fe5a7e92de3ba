"""Protections (attacks, in the availability-poisoning vocabulary): losses, HotFlip and the attack loops.
Importing this package registers every attack."""
from mmguard.attacks import em_image, mmguard, multimodal, random_noise, trigger_text  # noqa: F401
from mmguard.attacks.base import Attack, AttackConfig  # noqa: F401
