"""Where perturbations and triggers live during a protection run: keyed by sample id (or by class when
class-wise noise is asked for), never by batch position. Its size depends on the data, not on the model."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch

from mmguard.config.sections import rms_for_psnr
from mmguard.data.sample import Sample


class PerturbationStore:
    def __init__(self, samples: Iterable[Sample], eps: float, classwise: bool = False, seed: int = 0,
                 init: str = "uniform", psnr_min: Optional[float] = None):
        self.eps, self.classwise = eps, classwise
        self.rms_max = rms_for_psnr(psnr_min) if psnr_min is not None else None
        gen = torch.Generator().manual_seed(seed)
        self._delta: Dict[str, torch.Tensor] = {}
        self._shape: Dict[str, tuple] = {}
        for s in samples:
            key = self.key(s)
            w, h = s.pil.size
            if key in self._delta:
                if tuple(self._delta[key].shape) != (3, h, w):
                    raise ValueError(f"class-wise noise needs equal image sizes; sample {s.id!r} is {w}x{h}")
                continue
            if init == "uniform":
                d = (torch.rand((3, h, w), generator=gen) * 2 - 1) * eps
            else:
                d = torch.zeros((3, h, w))
            self._delta[key] = self.cap(d)

    def key(self, sample: Sample) -> str:
        return f"class:{sample.answer}" if self.classwise else sample.id

    def get(self, sample: Sample) -> torch.Tensor:
        return self._delta[self.key(sample)]

    def set(self, sample: Sample, delta: torch.Tensor) -> None:
        self.set_key(self.key(sample), delta)

    def set_key(self, key: str, delta: torch.Tensor) -> None:
        self._delta[key] = delta.detach().to("cpu", torch.float32)

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
        rms = float(delta.pow(2).mean().sqrt())
        return delta * (self.rms_max / rms) if rms > self.rms_max else delta

    def __len__(self) -> int:
        return len(self._delta)


def quantize_release(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The released 8-bit image: x + delta rounded to 1/255, clipped to [0, 1], and kept within the budget
    (an eps that is not a multiple of 1/255 could otherwise be exceeded by the rounding)."""
    x8 = torch.round(x * 255.0)
    levels = torch.floor(torch.tensor(eps * 255.0 + 1e-6))
    d8 = (torch.round((x + delta).clamp(0, 1) * 255.0) - x8).clamp(-levels, levels)
    return (x8 + d8) / 255.0
