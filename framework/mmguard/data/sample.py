"""The Sample type every loader returns and every component consumes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from mmguard.core.constants import LETTERS
from mmguard.data.errors import DataFormatError, Origin
from mmguard.data.images import ImageError, image_size, read_image, to_rgb

ImageLike = Union[Image.Image, str, Path]


@dataclasses.dataclass
class Sample:
    """One image-question-answer triple.

    ``image`` is a PIL image or a path. A path is decoded on every access to :attr:`pil` / :meth:`pixels` and
    never kept, so a large set costs the memory of the images in use, not of all of them; :attr:`size` reads
    only the file's header. ``answers`` holds every accepted alias, ``answer`` first. ``choices`` lists the
    options of a multiple-choice question; the answer is then the option letter ("A", "B", ...). ``origin``
    says where a loader read the sample (file, entry, fields), so that a later error names them.
    """

    id: str
    image: ImageLike
    question: str
    answer: str
    aliases: List[str] = dataclasses.field(default_factory=list)
    choices: Optional[List[str]] = None
    meta: dict = dataclasses.field(default_factory=dict)
    origin: Optional[Origin] = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.aliases = [a for a in dict.fromkeys([self.answer, *self.aliases]) if a is not None]

    @property
    def answers(self) -> List[str]:
        return self.aliases

    @property
    def pil(self) -> Image.Image:
        """The image as 8-bit RGB (see :mod:`mmguard.data.images`); a path is decoded anew on each access."""
        try:
            if not isinstance(self.image, Image.Image):
                return read_image(self.image)
            if self.image.mode != "RGB":  # in memory anyway: keep the conversion, done once
                self.image = to_rgb(self.image)
            return self.image
        except ImageError as err:
            raise self.error("image", str(err)) from None

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height), read from the file's header for a path (no decoding)."""
        if isinstance(self.image, Image.Image):
            return self.image.size
        try:
            return image_size(self.image)
        except ImageError as err:
            raise self.error("image", str(err)) from None

    def error(self, part: str, problem: str) -> DataFormatError:
        """A :class:`DataFormatError` about ``part`` of this sample, naming where it was read from."""
        origin = self.origin or Origin(str(self.image) if isinstance(self.image, (str, Path)) else "in-memory data",
                                       "sample", self.id)
        return origin.error(part, problem)

    def pixels(self) -> torch.Tensor:
        """The image as float (3, H, W) in [0, 1], exactly its 8-bit values / 255."""
        return pil_to_tensor(self.pil)

    def replace(self, **changes) -> "Sample":
        return dataclasses.replace(self, **changes)

    @property
    def prompt_question(self) -> str:
        """The question as the model reads it: options appended for multiple choice."""
        if not self.choices:
            return self.question
        opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
        return f"{self.question}\n{opts}\nAnswer with the option's letter."


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    arr = np.asarray(to_rgb(image), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> 8-bit RGB image, rounding to the nearest level."""
    arr = pixels.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def option_letter(index: int) -> str:
    return LETTERS[index]
