"""Property: whatever a data file holds (random JSON, random bytes, images that are garbage, truncated, tiny, 16-bit,
float, paths that leave the folder), the file loaders followed by ``check_splits`` raise nothing but UserError;
and data that passes the check can be decoded and exported. Damaged image files of every common format raise
nothing but ImageError."""
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.core.errors import UserError
from mmguard.core.registry import DATASETS
from mmguard.data.checks import check_splits
from mmguard.data.export import export_llava_json
from mmguard.data.images import ImageError, check_image, read_image

KEYS = ("id", "image", "images", "conversations", "messages", "from", "value", "role", "content", "question",
        "answer", "answers", "choices", "meta", "type", "text", "data")
ROLES = ("human", "gpt", "user", "assistant", "system", "robot")
GOOD_IMAGES = ("img0.png", "img1.png", "img2.png", "sub/../img0.png")
IMAGE_PATHS = GOOD_IMAGES + ("missing.png", "../outside.png", "link.png", "dir", "/etc/hostname", "", " ", "a\x00b",
                             "x" * 300, "~nosuchuser/a.png", "IMG0.PNG")

chars = st.characters(blacklist_categories=("Cs",))  # text that UTF-8 can encode
short_text = st.text(chars, max_size=12)
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | short_text
           | st.sampled_from(ROLES + IMAGE_PATHS + ("<image>", "<image>\nQ?", "A", "B")))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(KEYS) | st.text(chars, max_size=4), inner, max_size=6),
                           max_leaves=10)


def usually(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` about four times in five: random data should reach the checks behind the first refusal."""
    return st.sampled_from((True, True, True, True, False)).flatmap(lambda ok: good if ok else bad)


texts = usually(st.sampled_from(("Q?", "What colour?", "A", "B", "yes", "<image>\nQ?")),
                st.sampled_from(("", "  ", "<image>")) | short_text)
ids = usually(st.sampled_from(("a", "b", "c", "d", 1, 2)),
              st.sampled_from(("A", "a/1", "a 1", "", "x" * 300)) | st.integers(-3, 3) | json_values)
human = usually(st.sampled_from(("human", "user")), st.sampled_from(ROLES) | json_values)
assistant = usually(st.sampled_from(("gpt", "assistant")), st.sampled_from(ROLES) | json_values)
from_value = st.builds(lambda q, a, qt, at: [{"from": q, "value": qt}, {"from": a, "value": at}],
                       human, assistant, texts | json_values, texts | json_values)
role_content = st.builds(lambda q, a, qt, at: [{"role": q, "content": qt}, {"role": a, "content": at}],
                         human, assistant, texts | st.lists(st.fixed_dictionaries(
                             {"type": st.sampled_from(("text", "image", "video")), "text": texts}), max_size=3), texts)
turns = usually(st.lists(from_value | role_content, min_size=1, max_size=2).map(lambda ps: sum(ps, [])),
                st.lists(json_values, max_size=3) | json_values)
image_ref = usually(st.sampled_from(GOOD_IMAGES), st.sampled_from(IMAGE_PATHS) | json_values)
extras = {"id": ids, "answers": st.lists(texts, max_size=3) | json_values,
          "choices": st.lists(texts, max_size=3) | json_values, "meta": json_values}
conversation_entry = st.fixed_dictionaries({"image": image_ref, "conversations": turns},
                                           optional=extras) | st.fixed_dictionaries(
    {"images": st.lists(image_ref, min_size=1, max_size=2) | image_ref, "messages": turns}, optional=extras)
jsonl_entry = st.fixed_dictionaries({"image": image_ref, "question": texts, "answer": texts}, optional=extras)


@st.composite
def image_files(draw) -> bytes:
    kind = draw(st.sampled_from(("png",) * 6 + ("truncated", "garbage", "empty")))
    if kind == "garbage":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    mode = draw(st.sampled_from(("RGB", "L", "RGBA", "LA", "P", "1", "I;16", "F", "CMYK")))
    w, h = draw(usually(st.integers(8, 24), st.integers(1, 7))), draw(usually(st.integers(8, 24), st.integers(1, 7)))
    values = np.random.default_rng(draw(st.integers(0, 9))).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    im = Image.fromarray(values).convert("L" if mode in ("I;16", "F") else "RGB")
    im = im.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(im).astype(np.uint16) * 257)
    buf = io.BytesIO()
    im.save(buf, format={"F": "TIFF", "CMYK": "JPEG"}.get(mode, "PNG"))
    data = buf.getvalue()
    return data[: draw(st.integers(0, len(data) - 1))] if kind == "truncated" else data


def _contents(entries: st.SearchStrategy, jsonl: bool) -> st.SearchStrategy:
    def encode(items):
        if jsonl:
            return "\n".join(json.dumps(e, ensure_ascii=False) for e in items).encode("utf-8")
        return json.dumps(items, ensure_ascii=False).encode("utf-8")

    structured = st.lists(entries, min_size=1, max_size=4).map(encode)
    anything = json_values.map(lambda v: json.dumps(v).encode())
    spoiled = st.tuples(structured, st.integers(0, 200), st.binary(min_size=1, max_size=3)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1]:])
    return usually(structured, st.one_of(anything, spoiled, st.binary(max_size=200)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One folder reused by every example (only the images and the data file change): creating and removing a
    tree per example costs more than the loaders do."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "dir").mkdir()
    Image.new("RGB", (16, 16)).save(root / "outside.png")
    os.symlink(root / "outside.png", data / "link.png")
    return data


def _run(data: Path, loader: str, name: str, content: bytes, images, allow_outside: bool) -> None:
    for k, image in enumerate(images):
        (data / f"img{k}.png").write_bytes(image)
    (data / name).write_bytes(content)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # entries without an image are skipped with a warning
            splits = DATASETS.build(loader, train=data / name, allow_outside=allow_outside)
        check_splits(splits)
    except UserError as err:
        event(f"refused: {type(err).__name__}: {_gist(str(err), data)}")
        return
    event(f"passed with {len(splits['train'])} samples" if splits["train"] else "passed, empty")
    for s in splits["train"]:  # what passes the check is usable
        assert s.pixels().shape[0] == 3 and s.question.strip() and s.answer.strip()
    export_llava_json(splits["train"], data.parent / "out")


def _gist(message: str, root: Path) -> str:
    """The kind of refusal, for hypothesis' statistics (which branches the examples reach)."""
    problem = message.replace(str(root), "").rsplit("': ", 1)[-1]
    return " ".join(problem.split()[:4])


FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
files = st.lists(image_files(), min_size=3, max_size=3)


@FUZZ
@given(content=_contents(conversation_entry, jsonl=False), images=files, allow_outside=st.booleans())
def test_llava_json_raises_only_user_errors(workspace, content, images, allow_outside):
    _run(workspace, "llava_json", "data.json", content, images, allow_outside)


@FUZZ
@given(content=_contents(conversation_entry, jsonl=False), images=files, allow_outside=st.booleans())
def test_sharegpt_raises_only_user_errors(workspace, content, images, allow_outside):
    _run(workspace, "sharegpt", "data.json", content, images, allow_outside)


@FUZZ
@given(content=_contents(jsonl_entry, jsonl=True), images=files, allow_outside=st.booleans())
def test_jsonl_raises_only_user_errors(workspace, content, images, allow_outside):
    _run(workspace, "jsonl", "data.jsonl", content, images, allow_outside)


@st.composite
def damaged_images(draw) -> bytes:
    """A real image in one of PIL's common formats with some bytes overwritten, cut short or extended."""
    fmt = draw(st.sampled_from(("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM")))
    side = draw(st.integers(1, 20))
    im = Image.fromarray(np.random.default_rng(side).integers(0, 256, size=(side, side + 3, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    data = bytearray(buf.getvalue())
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)):
        data[pos] = value
    cut = draw(usually(st.just(len(data)), st.integers(0, len(data))))
    return bytes(data[:cut]) + draw(usually(st.just(b""), st.binary(max_size=8)))


@FUZZ
@given(content=damaged_images())
def test_damaged_image_files_raise_only_image_errors(workspace, content):
    path = workspace / "damaged.img"
    path.write_bytes(content)
    try:
        size = check_image(path, min_side=1, max_pixels=10**6)
    except ImageError as err:
        event("refused: " + " ".join(str(err).split("' is ", 1)[-1].split()[:3]))
        return
    event("passed")
    assert read_image(path).size == size and read_image(path).mode == "RGB"
