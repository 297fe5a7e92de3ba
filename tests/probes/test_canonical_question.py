"""``canonical_question``: every question asked in its type's canonical wording, learnt from the protected set alone;
a trigger appended to or inserted in the question is not part of it."""
import numpy as np
import pytest

from mmguard.attacks.hotflip import init_trigger
from mmguard.attacks.insertion import trigger_offset
from mmguard.core.errors import UserError
from mmguard.core.registry import PROBES
from mmguard.data.synthetic import generate
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.probes.canonical_question import canonical_wording
from helpers import applied

TYPES = ("colour", "shape", "count", "position", "caption", "colour_choice")


def triggered(samples, mode, seed=0, trigger=None):
    """Each question with a random trigger of 1 to 5 admissible words (or ``trigger(sample)``) at the end or at a
    word boundary inside it, where the protection puts it."""
    tok = build_tiny_tokenizer([], pad="<pad>", eos="</s>")
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        t = trigger(s) if trigger else init_trigger(tok, int(rng.integers(1, 6)), rng)
        at = trigger_offset(s.question, mode, seed, s.id)
        out.append(s.replace(question=s.question[:at] + t + s.question[at:]))
    return out


@pytest.fixture(scope="module")
def clean():
    return generate(240, seed=0, types=TYPES, size=16)


def test_canonical_wording_keeps_the_words_most_questions_share():
    qs = ["What colour is the shape?", "What colour is the shape? harp", "What colour fig is the shape?",
          "What colour is the shape? the", "What colour is the red shape?"]
    assert canonical_wording(qs, 0.5) == "What colour is the shape?"
    assert canonical_wording(["a b", "c d"], 0.6) is None  # no word in most questions: nothing to keep
    assert canonical_wording(["Is it red?", "Is it blue?", "Is it blue?"], 0.5) == "Is it blue?"


@pytest.mark.parametrize("mode", ["end", "inside"])
def test_triggered_questions_go_back_to_their_type_s_wording(clean, mode):
    protected = triggered(clean, mode)
    assert sum(p.question != c.question for p, c in zip(protected, clean)) == len(clean)
    out = applied(PROBES.build("canonical_question"), protected)
    assert [o.question for o in out] == [c.question for c in clean]
    for o, p in zip(out, protected):  # only the question changes
        assert (o.id, o.answer, o.aliases, o.choices, o.image) == (p.id, p.answer, p.aliases, p.choices, p.image)
    assert [o.question for o in applied(PROBES.build("canonical_question"), clean)] == [c.question for c in clean]


def test_without_named_types_the_answer_set_is_the_type(clean):
    """A data set that names no question type (a LLaVA JSON file): samples of one answer set share a wording."""
    bare = [s.replace(meta={}) for s in clean if s.meta["type"] in ("colour", "shape")]
    out = applied(PROBES.build("canonical_question"), triggered(bare, "inside"))
    assert [o.question for o in out] == [s.question for s in bare]


def test_a_trigger_per_answer_class(clean):
    """One trigger for every sample of a class: most questions of its answer set carry it, few of its type do."""
    colour = [s for s in clean if s.meta["type"] == "colour"]
    protected = triggered(colour, "end", trigger=lambda s: f" zz{s.answer}")
    by_type = applied(PROBES.build("canonical_question"), protected)
    assert {o.question for o in by_type} == {"What colour is the shape?"}
    by_answer = applied(PROBES.build("canonical_question", by="answer"), protected)
    assert [o.question for o in by_answer] == [p.question for p in protected]  # the documented limit


def test_a_type_whose_questions_differ_is_asked_alike():
    exists = generate(60, seed=0, types=("exists",), size=16)
    out = applied(PROBES.build("canonical_question"), exists)
    assert len({s.question for s in exists}) > 1 and len({o.question for o in out}) == 1
    assert [o.answer for o in out] == [s.answer for s in exists]


def test_text_only_callers(clean):
    probe = PROBES.build("canonical_question")
    with pytest.raises(UserError, match="has not seen the training set"):
        probe.transform_text("What colour is the shape? harp")
    protected = triggered(clean, "end")
    applied(probe, protected)
    assert probe.transform_text(protected[0].question) == clean[0].question
    assert probe.transform_text("How many shapes harp are there?") == "How many shapes are there?"
