"""UEraser-style adversarial augmentation (Qin et al. 2023, "Learning the Unlearnable"): heavy random
augmentation with kornia.

The per-sample ``__call__`` applies ONE random augmentation (what a data-side probe can do, e.g. ``apply``
for a data set on disk). UEraser proper draws ``copies`` augmentations of each training image at every step
and trains on the one with the largest loss: the probe sets ``in_training_step``, so fine-tuning leaves the
samples alone and ``VictimModule`` calls ``augment_copies`` on each batch, computes the per-sample loss of
each copy and back-propagates the per-sample maximum (``copies: 1`` is plain per-step augmentation).
"""
from __future__ import annotations

from typing import Annotated, Dict, Optional, Tuple

import torch

from mmguard.core.params import between
from mmguard.probes.base import ImageProbe, as_batch
from mmguard.core.registry import PROBES


def _pipeline(h: int, w: int):
    import kornia.augmentation as K

    return K.AugmentationSequential(
        K.RandomResizedCrop((h, w), scale=(0.5, 1.0), align_corners=False, p=1.0),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), p=0.5),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=0.5),
        K.RandomChannelShuffle(p=0.5),
        K.RandomGrayscale(p=0.2),
    )


@PROBES.register("ueraser")
class UEraser(ImageProbe):
    """Random resized crop, flip, colour jitter, plasma brightness/contrast, channel shuffle, grayscale.
    ``copies``: how many augmentations the training step draws per image; it trains on the largest of their
    per-sample losses (``augment_copies``; UEraser-Max)."""

    stochastic = True
    in_training_step = True

    def __init__(self, copies: Annotated[int, between(1, 1000)] = 5):
        self.copies = copies
        self._pipelines: Dict[Tuple[int, int], object] = {}

    def _aug(self, h: int, w: int):
        if (h, w) not in self._pipelines:
            self._pipelines[(h, w)] = _pipeline(h, w)
        return self._pipelines[(h, w)]

    def augment(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One random augmentation per image of a (B, 3, H, W) batch in [0, 1]; differentiable in ``x``.
        Deterministic given ``generator`` (kornia draws from the global RNG, so it runs in a forked RNG
        seeded from the generator; the caller's global RNG state is left as it was)."""
        x = as_batch(x)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        aug = self._aug(*x.shape[-2:])
        devices = [x.device] if x.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.random.default_generator.manual_seed(seed)
            if x.is_cuda:
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(seed)
            return aug(x).clamp(0, 1)

    def augment_copies(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``copies`` independent augmentations: (copies, B, 3, H, W), for the max-loss step. One kornia call on
        the batch repeated ``copies`` times (kornia draws each row's parameters independently): on small images
        the per-call overhead, not the pixels, is the cost."""
        x = as_batch(x)
        return self.augment(x.repeat(self.copies, 1, 1, 1), generator).view(self.copies, *x.shape)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.augment(x, generator)
