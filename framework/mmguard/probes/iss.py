"""Image Shortcut Squeezing (Liu et al., ICML 2023): grayscale against low-frequency (L2-style)
perturbations, low-quality JPEG against high-frequency (L-inf-style) ones."""
from __future__ import annotations

from typing import Annotated, Literal, Optional

import torch

from mmguard.core.params import between
from mmguard.probes.base import ImageProbe
from mmguard.probes.colour import grayscale
from mmguard.probes.jpeg import jpeg_differentiable, jpeg_pil, jpeg_tensor
from mmguard.core.registry import PROBES

@PROBES.register("iss")
class ISS(ImageProbe):
    """``mode`` "jpeg" (at ``quality``, default 10, as in the paper) or "grayscale"."""

    def __init__(self, mode: Literal["jpeg", "grayscale"] = "jpeg", quality: Annotated[int, between(1, 100)] = 10):
        self.mode, self.quality = mode, quality

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return grayscale(x) if self.mode == "grayscale" else jpeg_tensor(x, self.quality)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return grayscale(x) if self.mode == "grayscale" else jpeg_differentiable(x, self.quality)

    def __call__(self, sample, rng):
        if self.mode == "jpeg":
            return sample.replace(image=jpeg_pil(sample.pil, self.quality))
        return super().__call__(sample, rng)
