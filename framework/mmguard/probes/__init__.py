"""Probes: what an adaptive fine-tuner does to its training data to get past a protection.
Importing this package registers every probe (see ``base.py`` for the interface)."""
from mmguard.probes import (colour, combo, filters, geometry, iss, jpeg, mix, onion,  # noqa: F401
                            question_strip, text, ueraser)
from mmguard.probes.base import (ImageProbe, Probe, ProbePlan, TextProbe, build_probe, epoch_rng,  # noqa: F401
                                 plan_stages, sample_rng)
