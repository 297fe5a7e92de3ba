"""Datasets and collation between Samples and the adapters' batched model inputs."""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from torch.utils.data import DataLoader, Dataset

from mmguard.data.sample import Sample


class SampleDataset(Dataset):
    """A list of Samples, optionally passed through a per-sample transform (a probe) when read."""

    def __init__(self, samples: Sequence[Sample], transform: Optional[Callable[[Sample], Sample]] = None):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        s = self.samples[i]
        return self.transform(s) if self.transform is not None else s


class TrainCollator:
    """Samples -> collated model batch (tokenized with spans, pixels processed by the adapter)."""

    def __init__(self, adapter, keep_raw: bool = False):
        self.adapter = adapter
        self.keep_raw = keep_raw

    def __call__(self, samples: List[Sample]):
        encoded = [self.adapter.encode(s) for s in samples]
        images = [s.pixels() for s in samples]
        batch = self.adapter.collate(encoded, images)
        if self.keep_raw:  # adversarial training re-processes perturbed raw pixels every step
            batch["raw_images"] = images
        return batch


def keep_samples(samples: List[Sample]) -> List[Sample]:
    return samples


def train_loader(adapter, samples: Sequence[Sample], batch_size: int, seed: int,
                 transform: Optional[Callable] = None, shuffle: bool = True, keep_raw: bool = False) -> DataLoader:
    import torch

    gen = torch.Generator().manual_seed(seed)
    return DataLoader(SampleDataset(samples, transform), batch_size=batch_size, shuffle=shuffle, generator=gen,
                      collate_fn=TrainCollator(adapter, keep_raw), num_workers=0, drop_last=False)


def eval_loader(samples: Sequence[Sample], batch_size: int) -> DataLoader:
    return DataLoader(SampleDataset(samples), batch_size=batch_size, shuffle=False, collate_fn=keep_samples,
                      num_workers=0)
