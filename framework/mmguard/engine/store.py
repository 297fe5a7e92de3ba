"""The image budget of a protection: the L-inf ball, the [0, 1] box and the PSNR floor, the perturbation a run
starts from, and the 8-bit image it releases. Where perturbations are kept is ``engine/state.py``."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from mmguard.config.sections import rms_for_psnr

# Perturbations are kept as float16 (relative rounding up to 2**-11): the PSNR floor is kept with that margin.
FLOAT16_MARGIN = 1.0 - 2.0 ** -10


class Budget:
    def __init__(self, eps: float, psnr_min: Optional[float] = None):
        self.eps = eps
        self.rms_max = rms_for_psnr(psnr_min) * FLOAT16_MARGIN if psnr_min is not None else None

    def initial(self, shape: Tuple[int, ...], uniform: bool, generator: torch.Generator) -> torch.Tensor:
        """Round 0: zero, or uniform in the ball (Huang's EM, random noise), capped by the PSNR floor."""
        if not uniform:
            return torch.zeros(shape)
        return self.cap((torch.rand(shape, generator=generator) * 2 - 1) * self.eps)

    def project(self, x: Optional[torch.Tensor], delta: torch.Tensor) -> torch.Tensor:
        """L-inf ball of radius eps, x + delta inside [0, 1] (x None: class-wise noise shared by images), then
        the PSNR floor. Shrinking towards 0 keeps both box constraints, so the result satisfies all three."""
        delta = delta.clamp(-self.eps, self.eps)
        if x is not None:
            delta = (x + delta).clamp(0, 1) - x
        return self.cap(delta)

    def cap(self, delta: torch.Tensor) -> torch.Tensor:
        """Scale delta down so that its root-mean-square (over pixels and channels) stays within rms_max."""
        if self.rms_max is None:
            return delta
        rms = delta.float().pow(2).mean().sqrt()  # a tensor: no host sync on a GPU
        return delta * torch.clamp(self.rms_max / rms.clamp_min(1e-12), max=1.0).to(delta.dtype)


def quantize_release(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The released 8-bit image: x + delta rounded to 1/255, clipped to [0, 1], and kept within the budget
    (an eps that is not a multiple of 1/255 could otherwise be exceeded by the rounding)."""
    x8 = torch.round(x * 255.0)
    levels = torch.floor(torch.tensor(eps * 255.0 + 1e-6))
    d8 = (torch.round((x + delta).clamp(0, 1) * 255.0) - x8).clamp(-levels, levels)
    return (x8 + d8) / 255.0
