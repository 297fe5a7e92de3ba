"""The Sample type every loader returns and every component consumes."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch
from PIL import Image

from mmguard.core.constants import LETTERS

ImageLike = Union[Image.Image, str, Path]


@dataclasses.dataclass
class Sample:
    """One image-question-answer triple.

    ``image`` is a PIL image or a path (loaded on first use, so large sets stay cheap). ``answers`` holds
    every accepted alias, ``answer`` first. ``choices`` lists the options of a multiple-choice question; the
    answer is then the option letter ("A", "B", ...).
    """

    id: str
    image: ImageLike
    question: str
    answer: str
    aliases: List[str] = dataclasses.field(default_factory=list)
    choices: Optional[List[str]] = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        self.aliases = [a for a in dict.fromkeys([self.answer, *self.aliases]) if a is not None]

    @property
    def answers(self) -> List[str]:
        return self.aliases

    @property
    def pil(self) -> Image.Image:
        if not isinstance(self.image, Image.Image):
            path = Path(self.image)
            if not path.exists():
                raise FileNotFoundError(f"sample {self.id!r}: image file {str(path)!r} does not exist")
            with Image.open(path) as im:
                self.image = im.convert("RGB")
        elif self.image.mode != "RGB":
            self.image = self.image.convert("RGB")
        return self.image

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
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(pixels: torch.Tensor) -> Image.Image:
    """(3, H, W) in [0, 1] -> 8-bit RGB image, rounding to the nearest level."""
    arr = pixels.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def option_letter(index: int) -> str:
    return LETTERS[index]
