"""Mixing: the fine-tuner trains on a blend of protected and clean samples."""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from mmguard.data.sample import Sample
from mmguard.core.errors import UserError
from mmguard.core.params import UnitInterval
from mmguard.probes.base import Probe, sample_rng
from mmguard.core.registry import PROBES


@PROBES.register("mix")
class Mix(Probe):
    """Keep ``fraction`` of the protected samples (rounded to the nearest count) and replace the rest by
    their clean versions, matched by sample id. Which samples stay protected depends only on the seed and
    the ids (each id gets a seeded random key; the lowest keys stay), not on the order of the set.
    ``fraction`` 0: all clean; 1: all protected. Needs ``clean`` unless ``fraction`` is 1."""

    set_level = True
    seeded = True
    image = True
    text = True

    def __init__(self, fraction: UnitInterval = 0.5):
        self.fraction = fraction

    def keep_ids(self, ids: List[str], seed: int) -> set:
        k = int(math.floor(self.fraction * len(ids) + 0.5))
        keys = {i: sample_rng(seed, f"mix:{i}").random() for i in ids}
        return set(sorted(ids, key=lambda i: (keys[i], i))[:k])

    def prepare(self, samples: List[Sample], clean: Optional[List[Sample]], seed: int) -> List[Sample]:
        keep = self.keep_ids([s.id for s in samples], seed)
        if len(keep) == len(samples):
            return list(samples)
        if clean is None:
            raise ValueError("probe 'mix' needs the clean samples (apply(samples, clean=...)) "
                             "when fraction < 1")
        by_id = {c.id: c for c in clean}
        missing = [s.id for s in samples if s.id not in keep and s.id not in by_id]
        if missing:
            raise UserError(f"probe 'mix': no clean sample for id(s) {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''}")
        return [s if s.id in keep else by_id[s.id] for s in samples]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace()

