"""The pre-pass: every sample of every split checked once, before any work, so bad data fails in seconds with one
line that names the data file, the entry (index and id) and the field, instead of an hour later as a traceback.

Refused: empty or whitespace-only questions and answers; duplicate ids within a split, and ids whose exported
image names collide (compared case-insensitively, see :func:`mmguard.data.export.check_export_names`); images
that are missing, empty, corrupt or truncated, that PIL cannot convert to RGB (float images), with a side below
``min_side`` or more than ``max_pixels`` pixels. The size is read from the header before any pixel is decoded,
so an oversized image is refused without being allocated. Images are decoded one at a time and dropped (open,
decode, close), so the pass holds one image at most.
"""
from __future__ import annotations

from typing import Annotated, Mapping, Sequence

from mmguard.core.params import PositiveInt, at_least
from mmguard.data.export import check_export_names
from mmguard.data.images import ImageError, check_image
from mmguard.data.sample import Sample

DEFAULT_MIN_SIDE = 8
DEFAULT_MAX_PIXELS = 4096 * 4096


def check_splits(splits: Mapping[str, Sequence[Sample]], *,
                 min_side: Annotated[int, at_least(1)] = DEFAULT_MIN_SIDE,
                 max_pixels: PositiveInt = DEFAULT_MAX_PIXELS) -> None:
    """Refuse the first unusable sample of ``splits`` (``{"train": [...], "test": [...]}``) with a
    :class:`~mmguard.data.errors.DataFormatError`. The text and id checks run over every split before the first
    image is decoded."""
    for samples in splits.values():
        for sample in samples:
            check_text(sample)
        check_export_names(samples)
    for samples in splits.values():
        for sample in samples:
            try:
                check_image(sample.image, min_side=min_side, max_pixels=max_pixels)
            except ImageError as err:
                raise sample.error("image", str(err)) from None


def check_text(sample: Sample) -> None:
    """The question, the answer and every alias must say something."""
    for part, text in (("question", sample.question), ("answer", sample.answer)):
        if not isinstance(text, str) or not text.strip():
            raise sample.error(part, f"empty {part}")
    for k, alias in enumerate(sample.aliases):
        if not isinstance(alias, str) or not alias.strip():
            raise sample.error("answers", f"answer alias {k} is empty")
