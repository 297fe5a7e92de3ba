"""The pre-pass: every refusal is a UserError naming the data file, the entry id and the field, comes before any
work, and a folder of thousands of small images is checked in seconds."""
import json
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.core.errors import UserError
from mmguard.core.registry import DATASETS
from mmguard.data.checks import check_splits
from mmguard.data.export import export_llava_json
from mmguard.data.synthetic import generate


def _noise(path, size=(16, 16), seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _entry(sid, image, answer="yes", question="<image>\nIs it red?"):
    return {"id": sid, "image": image, "conversations": [{"from": "human", "value": question},
                                                         {"from": "gpt", "value": answer}]}


def _load(tmp_path, entries, name="data.json"):
    (tmp_path / name).write_text(json.dumps(entries))
    return DATASETS.build("llava_json", train=tmp_path / name)


def _refused(splits, **kw):
    with pytest.raises(UserError) as err:
        check_splits(splits, **kw)
    return str(err.value)


def _png_header_only(path, width, height):
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data: only a check that reads the
    header before decoding can refuse it quickly."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind,problem", [("zero", "empty (0 bytes)"), ("truncated", "truncated or corrupt"),
                                          ("garbage", "not an image"), ("tiny", "1x1; each side must be at least 8"),
                                          ("float", "floating-point"), ("deleted", "does not exist")])
def test_unusable_image_files_are_refused_naming_file_entry_and_field(tmp_path, kind, problem):
    _noise(tmp_path / "ok.png")
    bad = tmp_path / "bad.tif"
    if kind == "zero":
        bad.write_bytes(b"")
    elif kind == "truncated":
        _noise(tmp_path / "full.png", size=(64, 64))
        data = (tmp_path / "full.png").read_bytes()
        bad.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 4)
    elif kind == "tiny":
        Image.new("RGB", (1, 1)).save(bad, format="PNG")
    elif kind in ("float", "deleted"):
        Image.new("F", (16, 16), 0.5).save(bad, format="TIFF")
    splits = _load(tmp_path, [_entry("fine", "ok.png"), _entry("img-7", "bad.tif")])
    if kind == "deleted":
        bad.unlink()  # gone between loading and checking
    msg = _refused(splits)
    assert str(tmp_path / "data.json") in msg and "entry 1 (id 'img-7')" in msg and "field 'image'" in msg
    assert str(bad) in msg and problem in msg, msg
    check_splits({"train": splits["train"][:1]})  # the good entry alone passes


def test_oversized_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    Image.new("1", (8000, 8000)).save(tmp_path / "big.png")
    _png_header_only(tmp_path / "claims-big.png", 8000, 8000)
    splits = _load(tmp_path, [_entry("big", "big.png"), _entry("liar", "claims-big.png")])

    def no_decoding(self):
        raise AssertionError("the size check must come before decoding")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for k, sid in enumerate(["big", "liar"]):
        start = time.perf_counter()
        msg = _refused({"train": splits["train"][k:k + 1]})
        assert time.perf_counter() - start < 0.5
        assert f"entry {k} (id '{sid}')" in msg and "field 'image'" in msg and "data.json" in msg
        assert "8000x8000 = 64000000 pixels, more than the 16777216 allowed (max_pixels)" in msg


def test_decompression_bomb_becomes_a_user_error(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)  # past PIL's own limit: it refuses in Image.open
    splits = _load(tmp_path, [_entry("bomb", "bomb.png")])
    msg = _refused(splits, max_pixels=10**9)
    assert "entry 0 (id 'bomb')" in msg and "field 'image'" in msg and "too large to decode safely" in msg


def test_the_limits_are_parameters(tmp_path):
    Image.new("RGB", (4, 40)).save(tmp_path / "thin.png")
    splits = _load(tmp_path, [_entry("thin", "thin.png")])
    assert "4x40; each side must be at least 8" in _refused(splits)
    check_splits(splits, min_side=4)
    assert "160 pixels, more than the 100 allowed" in _refused(splits, min_side=4, max_pixels=100)


def test_ids_and_export_names_that_collide_are_refused_before_any_image_is_decoded(tmp_path, monkeypatch):
    for name in ("a.png", "b.png", "c.png"):
        _noise(tmp_path / name)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded before the id checks"))
    case = _load(tmp_path, [_entry("Cat", "a.png"), _entry("dog", "b.png"), _entry("cat", "c.png")])
    msg = _refused(case)
    assert "data.json: entry 2 (id 'cat'): field 'id'" in msg and "'Cat'" in msg and "entry 0" in msg
    assert "cat.png" in msg and "case-insensitively" in msg
    sanitised = _load(tmp_path, [_entry("x/1", "a.png"), _entry("x 1", "b.png")], "s.json")
    msg = _refused(sanitised)
    assert "s.json: entry 1 (id 'x 1'): field 'id'" in msg and "'x_1.png'" in msg
    syn = generate(3, seed=0)
    msg = _refused({"train": [syn[0], syn[1], syn[0]]})
    assert "duplicate sample id 'syn00000'" in msg and "field 'id'" in msg
    long_id = _load(tmp_path, [_entry("x" * 300, "a.png")], "l.json")
    assert "l.json: entry 0" in _refused(long_id) and "too long" in _refused(long_id)
    # export refuses the same collisions before writing anything
    with pytest.raises(UserError, match="case-insensitively"):
        export_llava_json(case["train"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_same_ids_in_train_and_test_are_allowed(tmp_path):
    _noise(tmp_path / "a.png")
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_entry("one", "a.png")]))
    check_splits(DATASETS.build("llava_json", train=path, test=path))


@pytest.mark.parametrize("part,field", [("question", "question"), ("answer", "answer"), ("aliases", "answers")])
def test_empty_text_in_memory_samples_is_refused(part, field):
    good = generate(2, seed=1)
    bad = good[1].replace(**({part: " \n "} if part != "aliases" else {"aliases": [good[1].answer, ""]}))
    msg = _refused({"train": [good[0]], "test": [bad]})
    assert f"id '{good[1].id}'" in msg and f"field '{field}'" in msg and "empty" in msg


def test_hub_samples_name_path_split_and_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                               "answer": datasets.Value("string")})
    rows = {"image": [Image.new("RGB", (16, 16)), Image.new("RGB", (2, 2))], "question": ["Q?", "Q?"],
            "answer": ["yes", "no"]}
    datasets.DatasetDict({split: datasets.Dataset.from_dict(rows, features=feats) for split in ("train", "test")}
                         ).save_to_disk(str(tmp_path / "rad"))
    msg = _refused(DATASETS.build("vqa_rad", path=str(tmp_path / "rad")))
    assert msg.startswith(f"dataset 'vqa_rad': '{tmp_path / 'rad'}': split 'train' row 1 (id 'vqa_rad-train-00001'): "
                          "field 'image': in-memory image is 2x2")


def test_a_folder_of_2000_small_images_is_checked_in_seconds(tmp_path):
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(2000):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
        entries.append(_entry(f"s{i:05d}", f"images/{i}.png"))
    splits = _load(tmp_path, entries)
    start = time.perf_counter()
    check_splits(splits)
    elapsed = time.perf_counter() - start
    print(f"check_splits: 2000 images in {elapsed:.3f} s ({2000 / elapsed:.0f} images/s)")
    assert elapsed < 5.0
    assert isinstance(splits["train"][0].image, type(tmp_path))  # nothing decoded was kept
