"""Geometric probes: random crop and pad back (rcp), and down-up resizing."""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Tuple

import torch
import torch.nn.functional as F

from mmguard.core.params import ParamError, between
from mmguard.probes.base import ImageProbe, as_batch
from mmguard.core.registry import PROBES

PAD_MODES = {"zeros": "constant", "reflect": "reflect"}


@PROBES.register("rcp")
class RandomCropPad(ImageProbe):
    """Crop a random window of ``fraction`` of the height and width, then pad it back to the original size
    around the centre, with zeros or by reflection (``pad``). The window position is drawn per image."""

    stochastic = True

    def __init__(self, fraction: Annotated[float, between(0, 1, lo_open=True)] = 0.875,
                 pad: Literal["zeros", "reflect"] = "zeros"):
        self.fraction, self.pad = fraction, pad

    @staticmethod
    def check_params(values) -> None:
        if values["pad"] == "reflect" and values["fraction"] < 0.5:
            raise ParamError("fraction", "pad 'reflect' needs fraction >= 0.5 (a smaller crop cannot reflect back "
                                         "to full size); use pad 'zeros'")

    def crop_size(self, h: int, w: int) -> Tuple[int, int]:
        ch, cw = max(1, round(h * self.fraction)), max(1, round(w * self.fraction))
        if self.pad == "reflect" and (h - ch > ch or w - cw > cw):
            raise ValueError(f"probe 'rcp': pad 'reflect' needs fraction >= 0.5 (a {ch}x{cw} crop cannot "
                             f"reflect to {h}x{w}); use pad 'zeros'")
        return ch, cw

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        x = as_batch(x)
        b, _, h, w = x.shape
        ch, cw = self.crop_size(h, w)
        top = torch.randint(0, h - ch + 1, (b,), generator=generator).tolist()
        left = torch.randint(0, w - cw + 1, (b,), generator=generator).tolist()
        pt, pl = (h - ch) // 2, (w - cw) // 2
        padding = (pl, w - cw - pl, pt, h - ch - pt)
        crops = torch.stack([x[i, :, top[i]:top[i] + ch, left[i]:left[i] + cw] for i in range(b)])
        return F.pad(crops, padding, mode=PAD_MODES[self.pad])


@PROBES.register("resize")
class Resize(ImageProbe):
    """Down-scale by ``factor`` (bilinear, antialiased) and back up to the original size (bilinear)."""

    def __init__(self, factor: Annotated[float, between(0, 1, lo_open=True)] = 0.5):
        self.factor = factor

    def differentiable(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        from kornia.geometry.transform import resize

        x = as_batch(x)
        h, w = x.shape[-2:]
        small = (max(1, round(h * self.factor)), max(1, round(w * self.factor)))
        down = resize(x, small, interpolation="bilinear", align_corners=False, antialias=True)
        return resize(down, (h, w), interpolation="bilinear", align_corners=False)
