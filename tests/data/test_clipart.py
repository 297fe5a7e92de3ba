"""The unseen picture set: balanced test split, a seeded draw, oversized drawings skipped, LLaVA JSON written
once and read back by the framework's loader."""
import pytest
from PIL import Image

from mmguard.core.errors import UserError
from mmguard.data import clipart
from mmguard.data.loaders import read_conversation_file


def fake_package(root, per_class=14, huge_in="food/fruit"):
    """The package's folder layout with small pictures (and one oversized header, which must be skipped)."""
    base = root / clipart.BASE
    for answer, (folders, _) in clipart.CLASSES.items():
        for i in range(per_class):
            folder = base / folders[0] / ("sub" if i % 3 == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGBA", (40 + i, 30), (10 * i, 100, 200, 255 if i % 2 else 0)).save(folder / f"{answer}{i}.png")
    Image.new("1", (5000, 4000)).save(base / huge_in / "huge.png")  # 20 Mpx: one bit a pixel on disk
    return root


def test_split_is_balanced_seeded_and_skips_oversized_pictures(tmp_path):
    root = fake_package(tmp_path)
    train, test = clipart.clipart_samples(root, seed=0, test_per_class=4, train_per_class=6)
    assert len(test) == 4 * len(clipart.CLASSES) and len(train) == 6 * len(clipart.CLASSES)
    assert {s.answer for s in test} == set(clipart.CLASSES)
    assert all(sum(s.answer == a for s in test) == 4 for a in clipart.CLASSES)
    sources = [s.meta["source"] for s in train + test]
    assert len(set(sources)) == len(sources) and not any(p.endswith("huge.png") for p in sources)
    assert all(s.pil.mode == "RGB" and s.question == clipart.QUESTION for s in test)
    assert "bug" in next(s for s in test if s.answer == "insect").aliases
    again, _ = clipart.clipart_samples(root, seed=0, test_per_class=4, train_per_class=6)
    other, _ = clipart.clipart_samples(root, seed=1, test_per_class=4, train_per_class=6)
    assert [s.meta["source"] for s in again] == [s.meta["source"] for s in train]
    assert sorted(s.meta["source"] for s in other) != sorted(s.meta["source"] for s in train)


def test_written_once_as_llava_json(tmp_path):
    cache = tmp_path / "cache"
    fake_package(cache / "pictures")
    (cache / "pictures" / f".done-{clipart.PACKAGE}").write_text("fake\n")  # no download
    train_file, test_file = clipart.write_clipart_set(cache, tmp_path / "set")
    train = read_conversation_file(train_file)
    assert len(read_conversation_file(test_file)) == 10 * len(clipart.CLASSES)
    assert {s.answer for s in train} == set(clipart.CLASSES)
    stamp = train_file.stat().st_mtime_ns
    assert clipart.write_clipart_set(cache, tmp_path / "set") == (train_file, test_file)
    assert train_file.stat().st_mtime_ns == stamp


def test_too_few_pictures_refused(tmp_path):
    with pytest.raises(UserError, match="only 3 pictures"):
        clipart.clipart_samples(fake_package(tmp_path, per_class=3), test_per_class=4)
    with pytest.raises(UserError, match="no Open Clip Art"):
        clipart.class_files(tmp_path / "empty")
