"""A synthetic VQA generator: shapes, colours, counts and positions, deterministic by seed.

It feeds the tests, the quickstart and the pre-training of the tiny model twins. Question types are kept
apart so that a twin pre-trained on some types meets a new type at fine-tuning time (zero-shot near chance,
as a real pretrained LVLM meets a new data set).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from mmguard.core.errors import UserError
from mmguard.data.sample import Sample

COLOURS: Dict[str, tuple] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
QUESTION_TYPES = ("colour", "shape", "count", "position", "exists", "colour_choice", "caption")
# The tiny twins are pre-trained to describe images (as real LVLMs are pre-trained on captions); the
# quickstart then asks a VQA question type they have never been asked.
PRETRAIN_TYPES = ("caption",)


def _draw(canvas: np.ndarray, shape: str, cy: float, cx: float, r: float, rgb: tuple) -> None:
    h, w, _ = canvas.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    elif shape == "square":
        mask = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    else:  # upward triangle
        top, bottom = cy - r, cy + r * 0.8
        half = (yy - top) / max(bottom - top, 1e-6) * r
        mask = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    canvas[mask] = rgb


def render(objects: Sequence[dict], size: int, rng: np.random.Generator, contrast: float = 1.0) -> Image.Image:
    """Draw objects ({shape, colour, cy, cx, r}) on a light textured background. ``contrast`` < 1 blends each
    object's colour towards the background (faint colours: a class signal that takes a learner many steps, as
    the features of real images do, instead of the few steps that saturated colours take)."""
    base = rng.integers(200, 246)
    canvas = np.full((size, size, 3), base, dtype=np.int16)
    canvas += rng.integers(-6, 7, size=canvas.shape, dtype=np.int16)
    canvas = canvas.clip(0, 255)
    for ob in objects:
        jitter = rng.integers(-12, 13, size=3)
        rgb = tuple(int(np.clip(base + contrast * (c + j - base), 0, 255))
                    for c, j in zip(COLOURS[ob["colour"]], jitter))
        _draw(canvas, ob["shape"], ob["cy"], ob["cx"], ob["r"], rgb)
    return Image.fromarray(canvas.astype(np.uint8), mode="RGB")


def _single_object(rng: np.random.Generator, size: int, quadrant: Optional[int] = None) -> dict:
    q = int(rng.integers(4)) if quadrant is None else quadrant
    r = size * rng.uniform(0.14, 0.2)
    half = size / 2
    cy = (half / 2 if q < 2 else 1.5 * half) + rng.uniform(-0.08, 0.08) * size
    cx = (half / 2 if q % 2 == 0 else 1.5 * half) + rng.uniform(-0.08, 0.08) * size
    return {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))],
        "cy": cy, "cx": cx, "r": r, "quadrant": q,
    }


def _make(index: int, qtype: str, rng: np.random.Generator, size: int, prefix: str,
          contrast: float = 1.0) -> Sample:
    sid = f"{prefix}{index:05d}"
    if qtype == "count":
        n = int(rng.integers(1, 5))
        quads = rng.permutation(4)[:n]
        objects = [_single_object(rng, size, int(q)) for q in quads]
        for ob in objects:
            ob["r"] = size * 0.12
        image = render(objects, size, rng, contrast)
        return Sample(sid, image, "How many shapes are there?", NUMBER_WORDS[n], [str(n)], meta={"type": qtype})
    ob = _single_object(rng, size)
    image = render([ob], size, rng, contrast)
    meta = {"type": qtype, "colour": ob["colour"], "shape": ob["shape"], "quadrant": QUADRANTS[ob["quadrant"]]}
    if qtype == "colour":
        return Sample(sid, image, "What colour is the shape?", ob["colour"], [], meta=meta)
    if qtype == "shape":
        return Sample(sid, image, "What shape is shown?", ob["shape"], [], meta=meta)
    if qtype == "position":
        return Sample(sid, image, "Where is the shape?", QUADRANTS[ob["quadrant"]], [], meta=meta)
    if qtype == "exists":
        asked = ob["colour"] if rng.random() < 0.5 else list(COLOURS)[int(rng.integers(len(COLOURS)))]
        answer = "yes" if asked == ob["colour"] else "no"
        return Sample(sid, image, f"Is there a {asked} shape?", answer, [], meta=meta)
    if qtype == "caption":
        return Sample(sid, image, "Describe the image.", f"{ob['colour']} {ob['shape']} {QUADRANTS[ob['quadrant']]}",
                      [], meta=meta)
    if qtype == "colour_choice":
        others = [c for c in COLOURS if c != ob["colour"]]
        options = [ob["colour"], *rng.choice(others, size=3, replace=False).tolist()]
        order = rng.permutation(4)
        choices = [options[i] for i in order]
        letter = "ABCD"[choices.index(ob["colour"])]
        return Sample(sid, image, "What colour is the shape?", letter, [], choices=choices, meta=meta)
    raise UserError(f"unknown synthetic question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def generate(n: int, seed: int = 0, types: Sequence[str] = ("colour",), size: int = 32,
             prefix: str = "syn", contrast: float = 1.0) -> List[Sample]:
    """``n`` samples cycling through ``types``; the same (n, seed, types, size, contrast) gives the same set."""
    if not 0 < contrast <= 1:
        raise UserError(f"synthetic data key 'contrast': {contrast} is not in (0, 1]")
    known = ", ".join(QUESTION_TYPES)
    if not types:
        raise UserError(f"synthetic data key 'types': name at least one question type ({known})")
    for t in types:
        if t not in QUESTION_TYPES:
            raise UserError(f"synthetic data key 'types': unknown question type {t!r}; known: {known}")
    rng = np.random.default_rng(seed)
    return [_make(i, types[i % len(types)], rng, size, prefix, contrast) for i in range(n)]


def answer_vocabulary() -> List[str]:
    """Every word a synthetic answer or question can contain (the tiny tokenizers learn them whole)."""
    words = set(COLOURS) | set(SHAPES) | set(NUMBER_WORDS) | {"yes", "no", "top", "bottom", "left", "right"}
    return sorted(words)
