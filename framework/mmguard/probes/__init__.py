"""Probes: what an adaptive fine-tuner does to its training data to get past a protection. Importing this package
registers every probe: each module of it is imported, so a new probe is one new file (see ``base.py``)."""
import importlib
import pkgutil

from mmguard.probes.base import ImageProbe, Probe, ProbePlan, TextProbe, epoch_rng, plan_stages  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
