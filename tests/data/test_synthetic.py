"""The synthetic VQA generator: deterministic by seed, disjoint splits, faint colours on request."""
import numpy as np
import pytest

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.data.synthetic import NUMBER_WORDS, generate
from mmguard.core.registry import DATASETS


def test_synthetic_deterministic_and_disjoint():
    a = DATASETS.build("synthetic", n_train=5, n_test=5, types=["colour", "count"], seed=3, size=16)
    b = DATASETS.build("synthetic", n_train=5, n_test=5, types=["colour", "count"], seed=3, size=16)
    c = DATASETS.build("synthetic", n_train=5, n_test=5, types=["colour", "count"], seed=4, size=16)
    assert [s.answer for s in a["train"]] == [s.answer for s in b["train"]]
    assert all((x.pixels() == y.pixels()).all() for x, y in zip(a["train"], b["train"]))
    assert not any((x.pixels() == y.pixels()).all() for x, y in zip(a["train"], c["train"]))
    train_px = {x.pixels().numpy().tobytes() for x in a["train"]}
    assert not train_px & {x.pixels().numpy().tobytes() for x in a["test"]}
    assert [s.meta["type"] for s in a["train"]] == ["colour", "count"] * 2 + ["colour"]
    count = a["train"][1]  # count answers carry the digit as an alias: "three" -> ["three", "3"]
    assert count.answers == [count.answer, str(NUMBER_WORDS.index(count.answer))]


def test_synthetic_contrast_fades_colours_towards_the_background():


    full = generate(6, seed=2)
    same = generate(6, seed=2, contrast=1.0)
    faint = generate(6, seed=2, contrast=0.5)
    for a, b, c in zip(full, same, faint):
        assert np.array_equal(np.asarray(a.pil), np.asarray(b.pil))  # the default is untouched
        assert a.answer == c.answer and a.id == c.id
        x, y = np.asarray(a.pil).astype(float), np.asarray(c.pil).astype(float)
        background = np.median(x.reshape(-1, 3), axis=0)
        obj = np.abs(x - background).sum(-1) > 60
        assert obj.sum() > 10
        # the object is about half as far from the background as at full contrast
        ratio = np.abs(y[obj] - background).mean() / np.abs(x[obj] - background).mean()
        assert 0.35 < ratio < 0.65, ratio
    with pytest.raises(ValueError, match="contrast"):
        generate(2, contrast=0)
    splits = DATASETS.build("synthetic", n_train=4, n_test=2, contrast=0.5)
    assert np.array_equal(np.asarray(splits["train"][0].pil), np.asarray(DATASETS.build("synthetic",
        n_train=4, n_test=2, contrast=0.5)["train"][0].pil))
