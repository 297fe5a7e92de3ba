"""Seeded draws from a split: a train/test partition, a class-balanced subsample, a size limit. Each keeps the
samples' file order, and each draw is its own stream of the data seed."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmguard.core.errors import UserError
from mmguard.data.sample import Sample


def split_train_test(samples: Sequence[Sample], test_fraction: float, seed: int = 0) -> Tuple[list, list]:
    """A seeded partition (no sample in both halves)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise UserError(f"test_fraction must lie in [0, 1], got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_test = int(round(len(samples) * test_fraction))
    test_idx, train_idx = sorted(order[:n_test].tolist()), sorted(order[n_test:].tolist())
    return [samples[i] for i in train_idx], [samples[i] for i in test_idx]


def draw_limit(samples: List[Sample], limit: Optional[int], seed: Optional[int] = None, stream: int = 0) -> List[Sample]:
    """``limit`` of ``samples`` drawn with (``seed``, ``stream``: one per split), in their order; all when no more.
    ``seed`` None: the first ``limit`` (a generated set, drawn from its seed already)."""
    if limit is None or len(samples) <= int(limit):
        return samples
    if seed is None:
        return samples[: int(limit)]
    keep = np.random.default_rng([int(seed), stream]).choice(len(samples), int(limit), replace=False)
    return [samples[i] for i in sorted(keep.tolist())]


def draw_per_answer(samples: List[Sample], per_answer: Optional[int], seed: int) -> List[Sample]:
    """At most ``per_answer`` samples of each answer, drawn with ``seed``, in their order: a class-balanced
    subsample (a smaller train split that still holds every class alike)."""
    if per_answer is None:
        return samples
    by_answer: Dict[str, List[int]] = {}
    for i, s in enumerate(samples):
        by_answer.setdefault(s.answer, []).append(i)
    rng = np.random.default_rng([int(seed), 2])
    keep = [j for _, idx in sorted(by_answer.items())
            for j in (rng.choice(idx, int(per_answer), replace=False).tolist() if len(idx) > per_answer else idx)]
    return [samples[i] for i in sorted(keep)]
