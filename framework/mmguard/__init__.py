"""mmguard: make image-text data unlearnable for vision-language models, and benchmark such protections."""
__version__ = "0.1.0"

from mmguard.core.registry import ATTACKS, DATASETS, MODELS, PROBES, VICTIMS, Registry  # noqa: F401
