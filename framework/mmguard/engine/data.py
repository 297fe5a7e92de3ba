"""Datasets and collation between Samples and the adapters' batched model inputs.

Training reads through an ``EpochSampler``: it yields (epoch, index) keys, so a dataset with a ``redraw``
function (a probe plan's ``draw``) gives each sample as that epoch sees it: random probe stages (random
crop + pad, ...) are drawn anew every epoch, from (seed, epoch, index, id), whatever order or worker reads it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from mmguard.data.sample import Sample
from mmguard.engine import distributed
from mmguard.engine.state import derived_seed

Redraw = Callable[[int, Sample, int], Sample]  # (index, sample, epoch) -> the sample that epoch sees


class SampleDataset(Dataset):
    """A list of Samples, optionally passed through a per-sample transform when read, and through ``redraw``
    (index, sample, epoch) when read by an (epoch, index) key."""

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable[[Sample], Sample]] = None,
                 redraw: Optional[Redraw] = None):
        self.samples = list(samples)
        self.transform = transform
        self.redraw = redraw

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Sample:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        s = self.samples[i]
        if self.redraw is not None:
            s = self.redraw(i, s, epoch)
        return self.transform(s) if self.transform is not None else s


class EpochSampler(Sampler):
    """Wraps a sampler and tags each index with the epoch: yields (epoch, index). Lightning calls
    ``set_epoch`` before each epoch; without it, each new pass counts as the next epoch. Under DDP each rank
    takes every world-th index of the same epoch order (padded by wrapping around, as DistributedSampler does, so
    that every rank runs the same number of steps)."""

    def __init__(self, sampler: Sampler, seed: Optional[int] = None):
        self.sampler, self.seed = sampler, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / distributed.world())

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        epoch = self.epoch
        self.epoch += 1
        if self.seed is not None and isinstance(self.sampler, RandomSampler):
            # each epoch's order from (seed, epoch): the same on every rank, and again after a resume
            self.sampler.generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        order = list(self.sampler)
        world, rank = distributed.world(), distributed.rank()
        if world > 1:
            order = (order * 2)[: len(self) * world][rank::world]
        for i in order:
            yield epoch, i



class TrainCollator:
    """Samples -> collated model batch (tokenized with spans, pixels processed by the adapter). Encodings are
    kept for the texts seen last (a bounded cache: every epoch of a small set re-uses them, a large set only
    costs the bound), since only probes that rewrite the text change them between epochs."""

    CACHE = 8192

    def __init__(self, adapter, keep_raw: bool = False):
        self.adapter = adapter
        self.keep_raw = keep_raw
        self._encoded: "OrderedDict[Tuple[str, str], object]" = OrderedDict()

    def encode(self, sample: Sample):
        key = (sample.question, sample.answer, tuple(sample.choices or ()), sample.size)
        hit = self._encoded.get(key)
        if hit is None:
            hit = self._encoded[key] = self.adapter.encode(sample)
            if len(self._encoded) > self.CACHE:
                self._encoded.popitem(last=False)
        else:
            self._encoded.move_to_end(key)
        return hit

    def __call__(self, samples: List[Sample]):
        encoded = [self.encode(s) for s in samples]
        images = [s.pixels() for s in samples]
        batch = self.adapter.collate(encoded, images)
        if self.keep_raw:  # adversarial training / batch augmentation re-process raw pixels every step
            batch["raw_images"] = images
        return batch


def keep_samples(samples: List[Sample]) -> List[Sample]:
    return samples


def train_loader(adapter, samples: Sequence[Sample], batch_size: int, seed: int,
                 transform: Optional[Callable] = None, shuffle: bool = True, keep_raw: bool = False,
                 redraw: Optional[Redraw] = None) -> DataLoader:
    """Shuffled (seeded) batches; ``redraw`` (a probe plan's ``draw``) re-draws random probe stages per epoch."""
    dataset = SampleDataset(samples, transform, redraw)
    base = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(base, seed),
                      collate_fn=TrainCollator(adapter, keep_raw), num_workers=0, drop_last=False)


class ShardSampler(Sampler):
    """Evaluation: this rank's every world-th sample, no padding, so each test sample is predicted exactly once."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return len(range(distributed.rank(), self.n, distributed.world()))

    def __iter__(self) -> Iterator[int]:
        return iter(range(distributed.rank(), self.n, distributed.world()))


def eval_loader(samples: Sequence[Sample], batch_size: int, own_rng: bool = False) -> DataLoader:
    """Batches of Samples, each predicted once over the ranks. ``own_rng``: the loader draws its base seed from a
    Generator of its own, not the global one (a set watched between training epochs must not move the dropout of
    the epochs after it)."""
    return DataLoader(SampleDataset(samples), batch_size=batch_size, sampler=ShardSampler(len(samples)),
                      collate_fn=keep_samples, num_workers=0,
                      generator=torch.Generator().manual_seed(0) if own_rng else None)
