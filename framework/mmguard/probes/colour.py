"""Colour-space squeezing: grayscale and bit-depth reduction."""
from __future__ import annotations

from typing import Annotated, Optional

import torch

from mmguard.core.params import between
from mmguard.probes.base import ImageProbe, as_batch
from mmguard.core.registry import PROBES


def grayscale(x: torch.Tensor) -> torch.Tensor:
    from kornia.color import rgb_to_grayscale

    x = as_batch(x)
    return rgb_to_grayscale(x).expand(-1, 3, -1, -1)


@PROBES.register("grayscale")
class Grayscale(ImageProbe):
    """ITU-R 601 luma (0.299 R + 0.587 G + 0.114 B) copied to the three channels."""

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return grayscale(x)


@PROBES.register("bitdepth")
class BitDepth(ImageProbe):
    """Keep ``bits`` bits per channel: 2**bits evenly spaced levels over [0, 1] (round to nearest).
    ``differentiable`` is the straight-through estimator (quantized forward, identity gradient)."""

    def __init__(self, bits: Annotated[int, between(1, 8)] = 3):
        self.bits = bits

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        levels = 2 ** self.bits - 1
        return as_batch(x).clamp(0, 1).mul(levels).round().div(levels)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        x = as_batch(x)
        return x + (self.forward(x) - x).detach()
