"""Accuracy: normalization, option-letter extraction, alias matching and the torchmetrics Metric."""
import math

import pytest

from mmguard.data.sample import Sample
from mmguard.metrics import VQAAccuracy, extract_choice, is_correct, normalize_answer


def open_q(answer, *aliases):
    return Sample("o", "unused.png", "q?", answer, list(aliases))


def mc(answer="B", choices=("red", "green", "blue", "yellow")):
    return Sample("m", "unused.png", "Which colour?", answer, choices=list(choices))


@pytest.mark.parametrize("text, expected", [
    ("Two", "2"), ("the red", "red"), ("A Red Circle.", "red circle"), ("  many   spaces ", "many spaces"),
    ("twenty-one", "21"), ("Ninety nine apples", "99 apples"), ("3.5", "3.5"), ("1,000", "1000"),
    ("don't", "dont"), ("An apple, an orange!", "apple orange"), ("zero", "0"), ("top-left", "top left"),
    ("(yes)", "yes"), ("The", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, sample, correct", [
    ("Two", open_q("2"), True),
    ("2", open_q("two"), True),
    ("the red", open_q("red"), True),
    ("Red.", open_q("red"), True),
    ("blue", open_q("red"), False),
    ("red car", open_q("red"), False),
    ("7", open_q("seven", "7"), True),
    ("Seven", open_q("7"), True),
    ("top right", open_q("top right"), True),
    ("top left", open_q("top right"), False),
    ("B", mc(), True),
    ("(B)", mc(), True),
    ("(b)", mc(), True),
    ("b", mc(), True),
    ("B. green", mc(), True),
    ("B) green", mc(), True),
    ("The answer is B", mc(), True),
    ("The answer is B.", mc(), True),
    ("Answer: (B)", mc(), True),
    ("green", mc(), True),
    ("The answer is green.", mc(), True),
    ("A", mc(), False),
    ("red", mc(), False),
    ("a red circle", mc(answer="A"), False),  # the article is not option A ...
    ("red", mc(answer="A"), True),            # ... but the option text is
    ("E", mc(), False),                       # not an option of a 4-way question
    ("", mc(), False),
    ("green", mc(answer="green"), True),      # gold given as option text
])
def test_is_correct(prediction, sample, correct):
    assert is_correct(prediction, sample) is correct


def test_extract_choice():
    choices = ["cat", "dog", "bird"]
    assert [extract_choice(p, choices) for p in ["C", "(c)", "c.", "C: bird", "Answer: C", "bird", "the bird",
                                                  "option c", "D", "maybe"]] == \
        ["C", "C", "C", "C", "C", "C", "C", "C", None, None]


def test_vqa_accuracy_metric():
    m = VQAAccuracy()
    assert math.isnan(float(m.compute()))
    m.update(["Two", "(B)", "no"], [open_q("2"), mc(), open_q("yes")])
    m.update(["the red"], [open_q("red")])
    assert float(m.compute()) == pytest.approx(3 / 4)
    assert int(m.correct) == 3 and int(m.total) == 4
    m.reset()
    m.update(["x"], [open_q("y")])
    assert float(m.compute()) == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 samples"):
        m.update(["a", "b"], [open_q("a")])


def test_vqa_accuracy_states_reduce_by_sum():
    # merging two ranks' states (what DDP's sync does) gives the pooled accuracy
    a, b = VQAAccuracy(), VQAAccuracy()
    a.update(["2"], [open_q("two")])
    b.update(["x", "y", "B"], [open_q("a"), open_q("y"), mc()])
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(3 / 4)
