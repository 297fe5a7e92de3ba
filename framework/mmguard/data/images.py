"""The one place an image file is opened and decoded, and the one conversion to 8-bit RGB.

Everything that needs pixels goes through here (``Sample.pil`` / ``Sample.pixels``, export, the pre-pass in
:mod:`mmguard.data.checks`), so a file decodes the same way everywhere. The conversion to 8-bit RGB:

* 16-bit images (PIL modes ``I;16``, ``I;16B``, ``I;16L``, and ``I`` holding 0..65535, which is how older PIL
  versions open 16-bit PNGs) are scaled by value, ``round(v * 255 / 65535)``, not clipped at 255; an ``I`` image
  with values outside 0..65535 has no defined white and is refused. PIL itself reduces 48-bit RGB and 64-bit RGBA
  PNGs to 8 bits when it opens them (it keeps the high byte, at most one level from rounding).
* Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, and ``P``/``L``/``RGB`` with a transparent colour) is
  composited on white: a transparent pixel becomes white, as a viewer on a white page shows it, instead of the
  arbitrary colour stored under it.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``1``, ``L`` and ``P`` are converted by PIL.
* Floating-point images (``F``) are refused: their range is not defined.

Sizes come from the header (``Image.open`` reads no pixel data), so a size check costs no decoding. Errors are
:class:`ImageError` (a ``UserError``) naming the image; the caller adds the data file, entry and field.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image

from mmguard.core.errors import UserError

ImageSource = Union[str, Path, Image.Image]
WHITE = (255, 255, 255)


class ImageError(UserError):
    """An image that cannot be used; the message names it and says why."""


def _name(source: ImageSource) -> str:
    return "in-memory image" if isinstance(source, Image.Image) else f"image file {str(source)!r}"


def open_image(path: Union[str, Path]) -> Image.Image:
    """The file opened lazily (header read, no pixels decoded); close it, or use it in a ``with`` block."""
    name = _name(path)
    if not os.path.isfile(path):
        raise ImageError(f"{name} does not exist" if not os.path.exists(path) else f"{name} is not a file")
    try:
        with warnings.catch_warnings():  # the caller's max_pixels decides what is too large, not PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} is too large to decode safely: {err}") from None
    except Image.UnidentifiedImageError:
        empty = os.path.getsize(path) == 0
        raise ImageError(f"{name} is {'empty (0 bytes)' if empty else 'not an image PIL can read'}") from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL's plugins raise SyntaxError, struct.error, ... on a bad header
        raise ImageError(f"{name} is corrupt: {type(err).__name__}: {err}") from None


def image_size(path: Union[str, Path]) -> Tuple[int, int]:
    """(width, height) from the file's header, without decoding it."""
    with open_image(path) as im:
        return im.size


def to_rgb(image: Image.Image, name: str = "in-memory image") -> Image.Image:
    """``image`` as 8-bit RGB (see the module docstring for the rules); an RGB image is returned as is."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "F":
        raise ImageError(f"{name} has floating-point pixels (mode F), whose range is undefined; save it as 8- or "
                         "16-bit")
    try:
        if mode == "I" or mode.startswith("I;16"):
            return _sixteen_bit_to_rgb(image, name)
        if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("LA").convert("RGBA") if mode == "La" else image.convert("RGBA")
            return _on_white(rgba)
        return image.convert("RGB")
    except ImageError:
        raise
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - a mode PIL cannot convert, or pixel data that fails to decode
        raise ImageError(f"{name} (mode {mode}) cannot be converted to RGB: {type(err).__name__}: {err}") from None


def _sixteen_bit_to_rgb(image: Image.Image, name: str) -> Image.Image:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageError(f"{name} (mode {image.mode}) holds values {values.min()}..{values.max()}, outside the "
                         "16-bit range 0..65535")
    grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # round(v * 255 / 65535) in integers
    transparent = image.info.get("transparency")
    rgb = Image.fromarray(grey, mode="L").convert("RGB")
    if isinstance(transparent, int):
        rgb.paste(WHITE, mask=Image.fromarray(((values == transparent) * 255).astype(np.uint8), mode="L"))
    return rgb


def _on_white(rgba: Image.Image) -> Image.Image:
    out = Image.new("RGB", rgba.size, WHITE)
    out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return out


def decode(image: Image.Image, name: str) -> Image.Image:
    """Decode an opened image's pixels (a truncated or corrupt file fails here) and convert them to 8-bit RGB."""
    try:
        image.load()
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL's decoders raise OSError, SyntaxError, EOFError, zlib.error, ...
        raise ImageError(f"{name} is truncated or corrupt: {type(err).__name__}: {err}") from None
    rgb = to_rgb(image, name)
    return rgb.copy() if rgb is image else rgb  # detached from the file, which the caller closes


def read_image(source: ImageSource) -> Image.Image:
    """An image file (or an in-memory image) as 8-bit RGB; the file is closed before returning."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    with open_image(source) as im:
        return decode(im, _name(source))


def check_image(source: ImageSource, *, min_side: int, max_pixels: int) -> Tuple[int, int]:
    """Refuse an image whose header gives a side below ``min_side`` or more than ``max_pixels`` pixels (before
    decoding it), then one that does not decode to RGB; keeps nothing and returns (width, height)."""
    name = _name(source)
    if isinstance(source, Image.Image):
        _check_size(source.size, name, min_side, max_pixels)
        to_rgb(source, name)
        return source.size
    with open_image(source) as im:
        _check_size(im.size, name, min_side, max_pixels)
        decode(im, name)
        return im.size


def _check_size(size: Tuple[int, int], name: str, min_side: int, max_pixels: int) -> None:
    width, height = size
    if min(width, height) < min_side:
        raise ImageError(f"{name} is {width}x{height}; each side must be at least {min_side} pixels")
    if width * height > max_pixels:
        raise ImageError(f"{name} is {width}x{height} = {width * height} pixels, more than the {max_pixels} "
                         "allowed (max_pixels)")
