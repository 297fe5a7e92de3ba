"""LVLM family adapters; importing this package registers every family and its tiny sizes."""
import importlib

from mmguard.models.base import Encoded, LVLMAdapter, TemplatePieces  # noqa: F401
from mmguard.models.zoo import FAMILIES, build_model, register_family  # noqa: F401

FAMILY_MODULES = ("llava", "qwen2_5_vl", "qwen3_vl", "glm4v", "paligemma", "gemma3", "internvl", "mllama",
                  "idefics3", "effnet_gemma3")

for _module in FAMILY_MODULES:
    try:
        importlib.import_module(f"mmguard.models.{_module}")
    except ModuleNotFoundError as _err:  # a family file not written yet must not hide the others
        if _err.name != f"mmguard.models.{_module}":
            raise
