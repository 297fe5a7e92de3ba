"""data/subsample.py through the file loaders: the seeded, class-balanced per-answer train subsample."""
from pathlib import Path

import mmguard.data  # noqa: F401  (registers the loaders)
from mmguard.core.registry import DATASETS


def test_per_answer_draws_a_class_balanced_train_subsample_from_the_seed():
    """The digit scans (30-ish a digit): 5 a digit, every digit alike, drawn anew by each seed and the same again at
    the same seed, in file order; the test split stays whole."""
    digits = Path(__file__).resolve().parents[1] / "fixtures" / "digits"
    kw = dict(train=digits / "train" / "data.json", test=digits / "test" / "data.json", per_answer=5)
    drawn = {seed: DATASETS.build("llava_json", seed=seed, **kw) for seed in (0, 1)}
    for seed, splits in drawn.items():
        counts = {}
        for s in splits["train"]:
            counts[s.answer] = counts.get(s.answer, 0) + 1
        assert len(counts) == 10 and set(counts.values()) == {5}
        assert len(splits["test"]) == 100
    ids = {seed: [s.id for s in splits["train"]] for seed, splits in drawn.items()}
    assert ids[0] != ids[1]
    assert ids[0] == [s.id for s in DATASETS.build("llava_json", seed=0, **kw)["train"]]
    order = [s.id for s in DATASETS.build("llava_json", **kw | {"per_answer": None})["train"]]
    assert ids[0] == [i for i in order if i in set(ids[0])]

