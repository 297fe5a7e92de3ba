"""Early stopping: the fine-tuner holds out a small split of its training set, validates after every epoch and keeps
the best epoch's weights. An error-minimizing poison is far less effective when training stops early, and the
authors ask benchmarks to report peak accuracy (Sandoval-Segura et al. 2022, arXiv 2204.08615)."""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, List, Literal, Optional, Sequence

import numpy as np

from mmguard.core.errors import UserError
from mmguard.core.params import PositiveInt, between
from mmguard.core.registry import PROBES
from mmguard.data.sample import Sample
from mmguard.probes.base import Probe, ProbePlan, sample_rng


@PROBES.register("early_stop")
class EarlyStop(Probe):
    """Hold out ``fraction`` of the training set (rounded, at least one sample and one left to train on; which
    samples depends only on the seed and the ids, as for mix), train on the rest, compute accuracy on the held-out
    split after every epoch and keep the weights of the best epoch (the earliest of equals). ``patience``: stop
    once that many epochs have not improved on it (Lightning's EarlyStopping; null: train every epoch).

    ``split: clean``: the held-out samples are validated in their clean versions (matched by id): a fine-tuner
    who has a small clean set of the task, as the literature's peak accuracy assumes (an upper bound on what
    stopping can do); ``protected``: in the versions the fine-tuner trains on, all it has
    (the trigger and perturbation along, so the shortcut helps validation too). The row reports the test accuracy
    of the kept weights, ``best_epoch`` (1: after the first epoch) and ``val_accuracy``."""

    fit_level = True
    set_level = True  # needs the whole set
    seeded = True

    def __init__(self, fraction: Annotated[float, between(0, 1, lo_open=True, hi_open=True)] = 0.1,
                 split: Literal["clean", "protected"] = "clean", patience: Optional[PositiveInt] = None):
        self.fraction, self.split, self.patience = fraction, split, patience

    def held_out(self, ids: Sequence[str], seed: int) -> set:
        if len(ids) < 2:
            raise UserError(f"probe 'early_stop' needs at least 2 training samples to hold one out, got {len(ids)}")
        k = min(max(1, int(math.floor(self.fraction * len(ids) + 0.5))), len(ids) - 1)
        keys = {i: sample_rng(seed, f"early_stop:{i}").random() for i in ids}
        return set(sorted(ids, key=lambda i: (keys[i], i))[:k])

    def fit_plan(self, plan: ProbePlan, clean: Optional[Sequence[Sample]], seed: int) -> ProbePlan:
        held = self.held_out([s.id for s in plan.samples], seed)
        keep = [i for i, s in enumerate(plan.samples) if s.id not in held]
        out = [i for i, s in enumerate(plan.samples) if s.id in held]
        if self.split == "protected":
            val: List[Sample] = [plan.draw(i, plan.samples[i], 0) for i in out]
        else:
            if clean is None:
                raise ValueError("probe 'early_stop' with split: clean needs the clean samples (plan(samples, clean))")
            by_id = {c.id: c for c in clean}
            missing = [plan.samples[i].id for i in out if plan.samples[i].id not in by_id]
            if missing:
                raise UserError(f"probe 'early_stop': no clean sample for id(s) {', '.join(missing[:5])}")
            val = [by_id[plan.samples[i].id] for i in out]
        return dataclasses.replace(plan.subset(keep), val=val)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace()
