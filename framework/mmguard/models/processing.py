"""Differentiable building blocks of the image processors: 8-bit quantization, PIL-exact resize, centre crop,
normalize.

Each agrees with what the real (PIL-backed) Hugging Face processors do to the same 8-bit image. Their resizes
are Pillow's ``Image.resize`` on 8-bit images, so ``pil_resize`` reproduces Pillow's fixed-point separable
filter (Resample.c): the same filter weights rounded to 22-bit fixed point, the same pass order, and the output
of each pass rounded to 8 bits, with a straight-through gradient through every rounding. A torch
``interpolate`` differs by several 8-bit levels, which changes what a small perturbation does after processing.
"""
from __future__ import annotations

import functools
import math
import struct
from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import ChannelDimension, SizeDict, get_image_size_for_max_height_width


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to 1/255 in the forward pass, identity gradient (straight-through estimator)."""
    q = torch.round(x.clamp(0, 1) * 255.0) / 255.0
    return x + (q - x).detach()


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


# ----------------------------------------------------------------- Pillow's filters, as Resample.c writes them
def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    return _sinc(x) * _sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


def _bilinear(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


def _bicubic(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    return (((x - 5) * x + 8) * x - 4) * a if x < 2.0 else 0.0


def _box(x: float) -> float:
    return 1.0 if -0.5 < x <= 0.5 else 0.0


_F054, _F046 = struct.unpack("2f", struct.pack("2f", 0.54, 0.46))  # Pillow writes them as C floats


def _hamming(x: float) -> float:
    x = abs(x)
    if x == 0.0:
        return 1.0
    if x >= 1.0:
        return 0.0
    x = x * math.pi
    return math.sin(x) / x * (_F054 + _F046 * math.cos(x))


def _mks2013(x: float) -> float:
    x = abs(x)
    if x < 0.5:
        return 17.0 / 16.0 - 7.0 / 4.0 * x ** 2
    if x < 1.5:
        return (1.0 - x) * (7.0 / 4.0 - x)
    return -1.0 / 8.0 * (x - 5.0 / 2.0) ** 2 if x < 2.5 else 0.0


def _mks2021(x: float) -> float:
    x = abs(x)
    if x < 0.5:
        return 577.0 / 576.0 - 239.0 / 144.0 * x ** 2
    if x < 1.5:
        return 35.0 / 36.0 * (x - 1.0) * (x - 239.0 / 140.0)
    if x < 2.5:
        return 1.0 / 6.0 * (x - 2.0) * (65.0 / 24.0 - x)
    if x < 3.5:
        return 1.0 / 36.0 * (x - 3.0) * (x - 15.0 / 4.0)
    return -1.0 / 288.0 * (x - 9.0 / 2.0) ** 2 if x < 4.5 else 0.0


NEAREST = 0
#: Pillow's Resampling value -> (support, filter); NEAREST is a pixel pick, not a convolution
FILTERS: Dict[int, Tuple[float, Callable[[float], float]]] = {
    1: (3.0, _lanczos), 2: (1.0, _bilinear), 3: (2.0, _bicubic), 4: (0.5, _box), 5: (1.0, _hamming),
    6: (2.5, _mks2013), 7: (4.5, _mks2021)}
_PRECISION = 1 << 22  # PRECISION_BITS = 32 - 8 - 2: Pillow's 8-bit coefficients are fixed point


def _nearest_weights(in_size: int, out_size: int) -> np.ndarray:
    """One-hot rows of Pillow's nearest resize (ImagingScaleAffine): source positions accumulate in double."""
    w = np.zeros((out_size, in_size))
    scale = in_size / out_size
    pos = scale * 0.5
    for xx in range(out_size):
        xin = -1 if pos < 0.0 else int(pos)
        if 0 <= xin < in_size:  # Pillow leaves 0 where the pick falls outside
            w[xx, xin] = 1.0
        pos += scale
    return w


def _filter_weights(in_size: int, out_size: int, resample: int) -> np.ndarray:
    """Pillow's precompute_coeffs + normalize_coeffs_8bpc, same float steps and the same rounding."""
    support, fn = FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support, inv_filterscale = support * filterscale, 1.0 / filterscale
    w = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin, xmax = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), in_size)
        k = [fn((x - center + 0.5) * inv_filterscale) for x in range(xmin, xmax)]
        total = 0.0
        for kx in k:  # in order, as C does (Python's sum() may compensate)
            total += kx
        for x, kx in zip(range(xmin, xmax), k):
            kx = kx / total if total != 0.0 else kx
            w[xx, x] = math.trunc(kx * _PRECISION + (-0.5 if kx < 0 else 0.5))
    return w / _PRECISION


@functools.lru_cache(maxsize=256)
def _weights_cpu(in_size: int, out_size: int, resample: int) -> torch.Tensor:
    w = _nearest_weights(in_size, out_size) if resample == NEAREST else _filter_weights(in_size, out_size, resample)
    return torch.from_numpy(w)


@functools.lru_cache(maxsize=256)
def pil_weights(in_size: int, out_size: int, resample: int, device: str = "cpu") -> torch.Tensor:
    """(out, in) float64 matrix of one resize pass; the values are exact multiples of 2^-22. Made outside
    inference mode even when first asked for inside it (an evaluation): the cached matrix is reused where
    gradients flow (PGD), and an inference tensor cannot be saved for backward."""
    with torch.inference_mode(False):
        return _weights_cpu(in_size, out_size, resample).to(device)


def _round8(y: torch.Tensor) -> torch.Tensor:
    """Pillow's clip8: (sum + 2^21) >> 22, clipped to [0, 255]; straight-through gradient."""
    return y + ((y + 0.5).floor().clamp(0, 255) - y).detach()


def resample_id(resample) -> int:
    """A PILImageResampling / PIL.Image.Resampling / int -> its int (BILINEAR for None, as PilBackend.resize)."""
    if resample is None:
        return int(Image.Resampling.BILINEAR)
    value = int(getattr(resample, "value", resample))
    if value != NEAREST and value not in FILTERS:
        raise ValueError(f"resample={resample!r} is not one of Pillow's filters (0-7)")
    return value


def pil_resize(x: torch.Tensor, height: int, width: int, resample) -> torch.Tensor:
    """(..., C, H, W) in [0, 1] holding 8-bit values -> Pillow ``Image.resize((width, height), resample)`` of the
    same 8-bit image, differentiably: two separable passes (each a matmul with a cached weight matrix, in
    float64 so the fixed-point sums are exact), each rounded to 8 bits, in the order the installed Pillow runs
    them. A pass whose size does not change is skipped, as in Pillow."""
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (height, width):
        return x  # Pillow returns a copy
    rid = resample_id(resample)
    dev = str(x.device)
    y = x.double() * 255.0
    y = y + (y.round() - y).detach()  # exact integers, so ties round as Pillow's integer arithmetic does

    def horizontal(t):
        return _round8(t @ pil_weights(in_w, width, rid, dev).T) if in_w != width else t

    def vertical(t):
        return _round8(pil_weights(in_h, height, rid, dev) @ t) if in_h != height else t

    y = horizontal(vertical(y)) if _vertical_first(in_h, in_w, height, width) else vertical(horizontal(y))
    return (y / 255.0).to(x.dtype)


def _vertical_first(in_h: int, in_w: int, height: int, width: int) -> bool:
    # Recent Pillow runs the vertical pass first when the height shrinks by more than twice as many pixels as
    # the width (less work); the order changes the 8-bit intermediate, hence the result.
    return height < in_h and in_h - height > 2 * (in_w - width) and _pillow_vertical_first()


@functools.lru_cache(maxsize=None)
def _pillow_vertical_first() -> bool:
    """Whether the installed Pillow has that rule: probe one resize where the two orders differ."""
    arr = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    ref = torch.from_numpy(np.array(Image.fromarray(arr).resize((40, 9), resample=1))).permute(2, 0, 1).double()
    y = torch.from_numpy(arr).permute(2, 0, 1).double()
    y = _round8(_round8(pil_weights(50, 9, 1) @ y) @ pil_weights(50, 40, 1).T)
    return bool(torch.equal(y, ref))


# ----------------------------------------------------------------- sizes and crops as the PIL backend computes them
def size_dict(size) -> SizeDict:
    return size if isinstance(size, SizeDict) else SizeDict(**dict(size))


def resize_output_size(size, height: int, width: int) -> Tuple[int, int]:
    """The (height, width) ``PilBackend.resize`` resizes an image to for a ``size`` setting (same branches, the
    library's own helpers)."""
    s = size_dict(size)
    if s.shortest_edge and s.longest_edge:
        return tuple(get_size_with_aspect_ratio((height, width), s.shortest_edge, s.longest_edge))
    if s.shortest_edge:
        shape_only = np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint8), (1, height, width))
        return tuple(get_resize_output_image_size(shape_only, size=s.shortest_edge, default_to_square=False,
                                                  input_data_format=ChannelDimension.FIRST))
    if s.max_height and s.max_width:
        return tuple(get_image_size_for_max_height_width((height, width), s.max_height, s.max_width))
    if s.height and s.width:
        return s.height, s.width
    raise ValueError(f"image processor size {size} has none of shortest_edge, max_height/max_width, height/width")


def center_crop(x: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """``image_transforms.center_crop`` of (..., C, H, W): zero-pad to at least the crop size (centred, an odd
    pixel on the top / left), then cut the crop."""
    height, width = x.shape[-2:]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    if (new_h, new_w) != (height, width):
        top_pad, left_pad = math.ceil((new_h - height) / 2), math.ceil((new_w - width) / 2)
        x = F.pad(x, (left_pad, new_w - width - left_pad, top_pad, new_h - height - top_pad))
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2  # floored, as the library does
    return x[..., top:top + crop_h, left:left + crop_w]
