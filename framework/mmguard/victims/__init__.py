"""Victims (fine-tuning recipes); importing this package registers them."""
from mmguard.victims import dora, full, lora, projector, projector_lora, qlora  # noqa: F401
from mmguard.victims.base import Victim  # noqa: F401
