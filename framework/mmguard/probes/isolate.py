"""Isolation of the samples learned fastest (anti-backdoor learning, Li et al. 2021, "Anti-Backdoor Learning:
Training Clean Models on Poisoned Data"): shortcut samples reach a low training loss in the first epochs, so the
fine-tuner drops them and trains on the rest."""
from __future__ import annotations

from typing import Annotated

import numpy as np

from mmguard.core.params import PositiveInt, between
from mmguard.core.registry import PROBES
from mmguard.data.sample import Sample
from mmguard.probes.base import Probe


@PROBES.register("isolate")
class Isolate(Probe):
    """Fine-tune ``epochs`` epochs on the whole training set, score every sample's loss (mean over its answer
    tokens, the model in eval mode, as ABL scores after its isolation stage), drop the ``fraction`` with the
    lowest loss (rounded; ties by id) and then run the victim's own fine-tune on the rest. ``restart: false``
    (ABL): the second stage continues from the isolation stage's weights; ``true``: it starts again from the
    weights the victim started from (a plain fine-tune of the kept samples). ABL's isolation stage trains with
    local gradient ascent and its second stage unlearns the isolated samples; this probe runs plain fine-tuning
    in both, the simplest fine-tuner that isolates. The row reports ``isolated``, the number dropped."""

    fit_level = True
    set_level = True  # needs the whole set

    def __init__(self, fraction: Annotated[float, between(0, 1, lo_open=True, hi_open=True)] = 0.1,
                 epochs: PositiveInt = 3, restart: bool = False):
        self.fraction, self.epochs, self.restart = fraction, epochs, restart

    def dropped(self, losses: dict) -> set:
        """The ids of the ``fraction`` of samples with the lowest loss (``losses``: id -> loss)."""
        k = min(int(np.floor(self.fraction * len(losses) + 0.5)), len(losses) - 1)
        return set(sorted(losses, key=lambda i: (losses[i], i))[:k])

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.replace()
