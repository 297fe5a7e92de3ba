"""Smoothing filters: Gaussian blur and median blur (kornia, reflect borders)."""
from __future__ import annotations

from typing import Annotated, Optional

import torch

from mmguard.core.params import between
from mmguard.probes.base import ImageProbe, OddKernel, as_batch
from mmguard.core.registry import PROBES


@PROBES.register("blur")
class GaussianBlur(ImageProbe):
    """Gaussian blur with an odd ``kernel`` size and standard deviation ``sigma`` (pixels)."""

    def __init__(self, kernel: OddKernel = 3, sigma: Annotated[float, between(0, 100, lo_open=True)] = 1.0):
        self.kernel, self.sigma = kernel, sigma

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        from kornia.filters import gaussian_blur2d

        return gaussian_blur2d(as_batch(x), (self.kernel, self.kernel), (self.sigma, self.sigma),
                               border_type="reflect")


@PROBES.register("median")
class MedianBlur(ImageProbe):
    """Median filter over a ``kernel`` x ``kernel`` window (reflect borders). Its gradient flows to the
    median pixel of each window."""

    def __init__(self, kernel: OddKernel = 3):
        self.kernel = kernel

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        from kornia.filters import median_blur

        return median_blur(as_batch(x), (self.kernel, self.kernel), border_type="reflect")
