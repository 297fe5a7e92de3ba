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


def _single_object(rng: np.random.Generator, size: int, quadrant: Optional[int] = None,
                   colour: Optional[str] = None, shape: Optional[str] = None) -> dict:
    q = int(rng.integers(4)) if quadrant is None else quadrant
    r = size * rng.uniform(0.14, 0.2)
    half = size / 2
    cy = (half / 2 if q < 2 else 1.5 * half) + rng.uniform(-0.08, 0.08) * size
    cx = (half / 2 if q % 2 == 0 else 1.5 * half) + rng.uniform(-0.08, 0.08) * size
    return {
        "shape": SHAPES[int(rng.integers(len(SHAPES)))] if shape is None else shape,
        "colour": list(COLOURS)[int(rng.integers(len(COLOURS)))] if colour is None else colour,
        "cy": cy, "cx": cx, "r": r, "quadrant": q,
    }


def answer_classes(qtype: str) -> List[str]:
    """Every answer a question type can have (its classes)."""
    if qtype == "colour":
        return list(COLOURS)
    if qtype == "shape":
        return list(SHAPES)
    if qtype == "position":
        return list(QUADRANTS)
    if qtype == "count":
        return list(NUMBER_WORDS[1:5])
    if qtype == "exists":
        return ["yes", "no"]
    if qtype == "colour_choice":
        return list("ABCD")
    if qtype == "caption":
        return [f"{c} {s} {q}" for c in COLOURS for s in SHAPES for q in QUADRANTS]
    raise UserError(f"unknown synthetic question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def _object_for(qtype: str, answer: Optional[str]) -> dict:
    """The constraints on the drawn object that give ``answer`` (none without one)."""
    if answer is None:
        return {}
    if qtype == "colour":
        return {"colour": answer}
    if qtype == "shape":
        return {"shape": answer}
    if qtype == "position":
        return {"quadrant": QUADRANTS.index(answer)}
    if qtype == "caption":
        colour, shape, quadrant = answer.split(" ", 2)
        return {"colour": colour, "shape": shape, "quadrant": QUADRANTS.index(quadrant)}
    return {}


def _make(index: int, qtype: str, rng: np.random.Generator, size: int, prefix: str,
          contrast: float = 1.0, answer: Optional[str] = None) -> Sample:
    """One sample of ``qtype``; its answer drawn at random, or ``answer`` when given."""
    sid = f"{prefix}{index:05d}"
    if qtype == "count":
        n = int(rng.integers(1, 5)) if answer is None else NUMBER_WORDS.index(answer)
        quads = rng.permutation(4)[:n]
        objects = [_single_object(rng, size, int(q)) for q in quads]
        for ob in objects:
            ob["r"] = size * 0.12
        image = render(objects, size, rng, contrast)
        return Sample(sid, image, "How many shapes are there?", NUMBER_WORDS[n], [str(n)], meta={"type": qtype})
    ob = _single_object(rng, size, **_object_for(qtype, answer))
    image = render([ob], size, rng, contrast)
    meta = {"type": qtype, "colour": ob["colour"], "shape": ob["shape"], "quadrant": QUADRANTS[ob["quadrant"]]}
    if qtype == "colour":
        return Sample(sid, image, "What colour is the shape?", ob["colour"], [], meta=meta)
    if qtype == "shape":
        return Sample(sid, image, "What shape is shown?", ob["shape"], [], meta=meta)
    if qtype == "position":
        return Sample(sid, image, "Where is the shape?", QUADRANTS[ob["quadrant"]], [], meta=meta)
    if qtype == "exists":
        others = [c for c in COLOURS if c != ob["colour"]]
        if answer is None:
            asked = ob["colour"] if rng.random() < 0.5 else list(COLOURS)[int(rng.integers(len(COLOURS)))]
        else:
            asked = ob["colour"] if answer == "yes" else others[int(rng.integers(len(others)))]
        return Sample(sid, image, f"Is there a {asked} shape?", "yes" if asked == ob["colour"] else "no", [],
                      meta=meta)
    if qtype == "caption":
        return Sample(sid, image, "Describe the image.", f"{ob['colour']} {ob['shape']} {QUADRANTS[ob['quadrant']]}",
                      [], meta=meta)
    if qtype == "colour_choice":
        others = [c for c in COLOURS if c != ob["colour"]]
        options = [ob["colour"], *rng.choice(others, size=3, replace=False).tolist()]
        order = rng.permutation(4)
        choices = [options[i] for i in order]
        if answer is not None:  # the true colour moved to the asked letter, the distractors keep their order
            choices.remove(ob["colour"])
            choices.insert("ABCD".index(answer), ob["colour"])
        letter = "ABCD"[choices.index(ob["colour"])]
        return Sample(sid, image, "What colour is the shape?", letter, [], choices=choices, meta=meta)
    raise UserError(f"unknown synthetic question type {qtype!r}; known: {', '.join(QUESTION_TYPES)}")


def generate(n: int, seed: int = 0, types: Sequence[str] = ("colour",), size: int = 32,
             prefix: str = "syn", contrast: float = 1.0, balanced: bool = False) -> List[Sample]:
    """``n`` samples cycling through ``types``; the same (n, seed, types, size, contrast, balanced) gives the same
    set. Answers are drawn at random (a training set's natural class mix) unless ``balanced``: then each question
    type cycles through its classes (``answer_classes``), in a seeded random order reshuffled every cycle, so that
    among a type's m samples every class appears floor(m/K) or ceil(m/K) times. A test split is balanced, so a
    model that always gives one answer scores 1/K (exactly, when K divides m), whichever answer it collapses to."""
    if not 0 < contrast <= 1:
        raise UserError(f"synthetic data key 'contrast': {contrast} is not in (0, 1]")
    known = ", ".join(QUESTION_TYPES)
    if not types:
        raise UserError(f"synthetic data key 'types': name at least one question type ({known})")
    for t in types:
        if t not in QUESTION_TYPES:
            raise UserError(f"synthetic data key 'types': unknown question type {t!r}; known: {known}")
    rng = np.random.default_rng(seed)
    kinds = [types[i % len(types)] for i in range(n)]
    answers: List[Optional[str]] = [None] * n
    if balanced:
        cycles: Dict[str, List[str]] = {t: [] for t in types}
        for i, t in enumerate(kinds):
            if not cycles[t]:
                cycles[t] = [answer_classes(t)[j] for j in rng.permutation(len(answer_classes(t)))]
            answers[i] = cycles[t].pop()
    return [_make(i, t, rng, size, prefix, contrast, a) for i, (t, a) in enumerate(zip(kinds, answers))]


def answer_vocabulary() -> List[str]:
    """Every word a synthetic answer or question can contain (the tiny tokenizers learn them whole)."""
    words = set(COLOURS) | set(SHAPES) | set(NUMBER_WORDS) | {"yes", "no", "top", "bottom", "left", "right"}
    return sorted(words)
