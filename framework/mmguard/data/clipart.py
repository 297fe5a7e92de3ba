"""A labelled picture set that nothing in the project trains on: Open Clip Art (Debian ``openclipart-png``, public
domain), eight of its folders as eight answers to "What is in this picture?", written as LLaVA JSON.

The alignment (``engine/align.py``) never sees this package, so the set measures what fine-tuning of the aligned
model learns on data the project has never seen. Test split class-balanced (``test_per_class`` of every class),
train up to ``train_per_class`` of the rest; the draw is a seeded shuffle of each folder's sorted files.
"""
from __future__ import annotations

import random
import warnings
from pathlib import Path

from PIL import Image
from typing import Dict, List, Tuple

from mmguard.core.errors import UserError
from mmguard.data.export import export_llava_json
from mmguard.data.pictures import fetch_pictures, on_white
from mmguard.data.sample import Sample

PACKAGE = "openclipart-png"
BASE = Path("usr/share/openclipart/png")
QUESTION = "What is in this picture?"
# answer -> (folders, aliases); folders whose pictures are one kind of thing, 35 or more of them each
CLASSES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "bird": (("animals/birds",), ("birds",)),
    "insect": (("animals/bugs",), ("bug", "insects")),
    "fruit": (("food/fruit",), ("fruits",)),
    "dessert": (("food/desserts",), ("cake", "desserts")),
    "drink": (("food/beverages",), ("beverage", "drinks")),
    "house": (("buildings/homes",), ("home", "houses")),
    "boat": (("transportation/boating",), ("ship", "boats")),
    "car": (("transportation/vehicles",), ("vehicle", "cars")),
}


# a few drawings are exported at ~13,000 px a side: minutes to decode for a picture the model sees at 128 px
MAX_PIXELS = 16_000_000


def _small_enough(path: Path) -> bool:
    with warnings.catch_warnings(), Image.open(path) as image:  # reads the header only
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return image.width * image.height <= MAX_PIXELS


def class_files(root: Path) -> Dict[str, List[Path]]:
    base = root / BASE
    if not base.is_dir():
        raise UserError(f"no Open Clip Art pictures under {base}: fetch them with fetch_pictures({root}, "
                        f"('{PACKAGE}',))")
    return {answer: sorted(p for folder in folders for p in (base / folder).rglob("*.png") if _small_enough(p))
            for answer, (folders, _) in CLASSES.items()}


def clipart_samples(root: Path, seed: int = 0, test_per_class: int = 10,
                    train_per_class: int = 30) -> Tuple[List[Sample], List[Sample]]:
    train, test = [], []
    for answer, files in class_files(root).items():
        files = list(files)
        random.Random(f"{seed}:{answer}").shuffle(files)
        if len(files) < test_per_class + 1:
            raise UserError(f"{PACKAGE}: only {len(files)} pictures of {answer!r}, {test_per_class} needed for test")
        aliases = list(CLASSES[answer][1])
        for split, chosen in ((test, files[:test_per_class]),
                              (train, files[test_per_class:test_per_class + train_per_class])):
            split += [Sample(f"clipart-{answer}-{i:03d}", on_white(p), QUESTION, answer, aliases,
                             meta={"source": p.relative_to(root / BASE).as_posix()}) for i, p in enumerate(chosen)]
    random.Random(seed).shuffle(train)
    return train, test


def write_clipart_set(cache: Path, out: Path, seed: int = 0) -> Tuple[Path, Path]:
    """``out/{train,test}/data.json`` (written once; a finished set is reused), from the package fetched into
    ``cache/pictures``."""
    done = (out / "train" / "data.json", out / "test" / "data.json")
    if all(p.is_file() for p in done):
        return done
    train, test = clipart_samples(fetch_pictures(cache / "pictures", (PACKAGE,)), seed=seed)
    return export_llava_json(train, out / "train"), export_llava_json(test, out / "test")
