"""Differentiable building blocks of the image processors: 8-bit quantization, resize, normalize.

Each is written to agree with what the real (PIL-backed) Hugging Face processors do to the same 8-bit image:
the real pipeline resizes 8-bit images and stays 8-bit, so we quantize before and after a resize with a
straight-through gradient.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to 1/255 in the forward pass, identity gradient (straight-through estimator)."""
    q = torch.round(x.clamp(0, 1) * 255.0) / 255.0
    return x + (q - x).detach()


def resize(x: torch.Tensor, height: int, width: int, mode: str = "bicubic") -> torch.Tensor:
    """Differentiable resize of (3, H, W) or (B, 3, H, W), antialiased like PIL when shrinking, then re-quantized
    to 8 bits as PIL's uint8 output is. A no-op when the size already matches (then exact)."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    batched = x.dim() == 4
    y = x if batched else x[None]
    y = F.interpolate(y, size=(height, width), mode=mode, align_corners=False, antialias=mode in ("bilinear",
                                                                                                   "bicubic"))
    y = quantize_ste(y)
    return y if batched else y[0]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def pil_resample_to_mode(resample) -> str:
    """PIL resample enum (or int) -> torch interpolate mode."""
    value = int(getattr(resample, "value", resample)) if resample is not None else 3
    return {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bilinear"}.get(value, "bicubic")
