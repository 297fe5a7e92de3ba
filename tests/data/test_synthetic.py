"""The synthetic VQA generator: deterministic by seed, disjoint splits, faint colours on request, class-balanced
test splits."""
from collections import Counter

import numpy as np
import pytest

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.data.synthetic import NUMBER_WORDS, answer_classes, generate
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


@pytest.mark.parametrize("n", [12, 17, 100])
def test_balanced_split_cycles_through_every_class_of_every_type(n):
    types = ("colour", "count", "position", "exists", "colour_choice", "shape")
    samples = generate(n, seed=7, types=types, balanced=True)
    for t in types:
        of_type = [s for s in samples if s.meta["type"] == t]
        counts = [sum(s.answer == c for s in of_type) for c in answer_classes(t)]
        assert max(counts) - min(counts) <= 1 and sum(counts) == len(of_type), (t, counts)
        if len(of_type) % len(counts) == 0:
            assert len(set(counts)) == 1, (t, counts)
    for s in samples:  # the forced answer is the image's truth
        if s.meta["type"] in ("colour", "colour_choice"):
            shown = s.meta["colour"]
            assert (s.answer if s.meta["type"] == "colour" else s.choices["ABCD".index(s.answer)]) == shown
        if s.meta["type"] == "exists":
            assert (s.answer == "yes") == (f" {s.meta['colour']} " in s.question)
        if s.meta["type"] == "position":
            assert s.answer == s.meta["quadrant"]


def test_balanced_test_split_is_exact_when_n_is_a_multiple_of_the_classes():
    test = DATASETS.build("synthetic", n_train=60, n_test=24, seed=0)["test"]
    assert sorted(Counter(s.answer for s in test).values()) == [4] * 6
    train = DATASETS.build("synthetic", n_train=60, n_test=24, seed=0)["train"]
    assert len(set(Counter(s.answer for s in train).values())) > 1  # the train split keeps its natural mix
    # a victim that always answers one class scores exactly 1/6, whichever class
    assert {sum(s.answer == c for s in test) / len(test) for c in answer_classes("colour")} == {1 / 6}


def test_balanced_sets_differ_by_seed_and_repeat_by_seed():
    a, b = generate(12, seed=1, balanced=True), generate(12, seed=1, balanced=True)
    c = generate(12, seed=2, balanced=True)
    assert all(np.array_equal(np.asarray(x.pil), np.asarray(y.pil)) for x, y in zip(a, b))
    assert not any(np.array_equal(np.asarray(x.pil), np.asarray(y.pil)) for x, y in zip(a, c))
    assert [s.answer for s in a] != [s.answer for s in c]  # the class order is seeded too
