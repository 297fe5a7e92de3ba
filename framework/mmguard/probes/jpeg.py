"""JPEG re-encoding: a real encode/decode with Pillow (4:2:0, standard tables) and kornia's differentiable
JPEG (Reich et al. 2024) for EoT."""
from __future__ import annotations

import io
from typing import Annotated, Optional

import torch
from PIL import Image

from mmguard.data.sample import pil_to_tensor, tensor_to_pil
from mmguard.core.params import between
from mmguard.probes.base import ImageProbe, as_batch
from mmguard.core.registry import PROBES


def jpeg_pil(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def jpeg_tensor(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG on a float batch (quantized to 8 bits first, as a saved image is)."""
    x = as_batch(x)
    out = [pil_to_tensor(jpeg_pil(tensor_to_pil(im), quality)) for im in x]
    return torch.stack(out).to(device=x.device, dtype=x.dtype)


def jpeg_differentiable(x: torch.Tensor, quality: int) -> torch.Tensor:
    from kornia.enhance import jpeg_codec_differentiable

    x = as_batch(x)
    q = torch.tensor([float(quality)], device=x.device, dtype=x.dtype)
    return jpeg_codec_differentiable(x.clamp(0, 1), q)


@PROBES.register("jpeg")
class JPEG(ImageProbe):
    """JPEG at ``quality`` (1..100). ``differentiable`` is kornia's differentiable codec (an approximation of
    libjpeg: same tables and 4:2:0 subsampling, smooth rounding)."""

    def __init__(self, quality: Annotated[int, between(1, 100)] = 75):
        self.quality = quality

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return jpeg_tensor(x, self.quality)

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return jpeg_differentiable(x, self.quality)

    def __call__(self, sample, rng):
        return sample.replace(image=jpeg_pil(sample.pil, self.quality))
