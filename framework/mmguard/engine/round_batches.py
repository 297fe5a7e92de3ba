"""The protection loop's data: a rank's batches of sample ids for the current round, in a seeded order."""
from __future__ import annotations

import math

import torch

from mmguard.engine.state import generator


class Ids(torch.utils.data.Dataset):
    """The loop's data set is the sample ids themselves (the module reads each sample when its batch comes)."""

    def __getitem__(self, sample_id: str) -> str:
        return sample_id


class RoundBatches(torch.utils.data.Sampler):
    """This rank's batches of the current round: its samples in an order drawn from (seed, round, rank); a resumed
    round starts at the first batch not yet done."""

    def __init__(self, module):
        self.module = module

    def __len__(self) -> int:
        return math.ceil(len(self.module.own_ids()) / self.module.loop.batch_size)

    def __iter__(self):
        m = self.module
        own = m.own_ids()
        round_ = m.first_round + m.current_epoch
        order = torch.randperm(len(own), generator=generator(m.seed, 0, round_, m.rank)).tolist()
        size = m.loop.batch_size
        start = m.start_batch if m.current_epoch == 0 else 0
        for b in range(start, len(self)):
            yield [own[i] for i in order[b * size:(b + 1) * size]]
