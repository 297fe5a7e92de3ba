"""Trigger insertion inside the question: offsets that question_strip keeps, chosen from (seed, sample id), and
spans that stay right on every tiny family (G exactly the trigger's tokens, T every question token, unchanged)."""
import pytest

from mmguard.attacks.insertion import inside_boundaries, trigger_offset
from mmguard.attacks.view import SurrogateView
from mmguard.core.registry import MODELS
from mmguard.data.synthetic import QUESTION_TYPES, generate
from mmguard.models import build_model
from mmguard.models.base import LVLMAdapter
from mmguard.probes.question_strip import QuestionStrip

QUESTIONS = [
    "What colour is the shape?",
    "Is there a red shape?",
    "Describe the image.",                                   # no '?': before its last word
    "Look at the picture. Then name the colour",             # no '?', two sentences: inside the first one
    "What is shown here? Answer in one word.",               # text after the '?': the strip drops it
    "How many?",                                             # one boundary
    "Why?",                                                  # none: the trigger stays at the end
    "What is 3.5 plus 1 ?",
    "Which\nline is it?",
]
TRIGGER = " zephyr meadow"


@pytest.mark.parametrize("question", QUESTIONS)
def test_inside_offsets_survive_question_strip(question):
    strip = QuestionStrip()
    boundaries = inside_boundaries(question)
    if question == "Why?":
        assert boundaries == [] and trigger_offset(question, "inside", 0, "a") == len(question)
        return
    assert boundaries
    for at in boundaries:
        assert question[at].isspace() and not question[at - 1].isspace()
        text, _ = LVLMAdapter.insert_trigger(question, TRIGGER, at)
        assert TRIGGER in strip.transform_text(text), (question, at)
        assert text.replace(TRIGGER, "", 1) == question  # inserted, nothing replaced
    appended = LVLMAdapter.insert_trigger(question, TRIGGER)[0]
    assert TRIGGER not in strip.transform_text(appended)  # what inside insertion is for


def test_offsets_are_deterministic_per_seed_and_sample():
    q = "Is there a big red shape in the picture?"
    assert inside_boundaries(q) == [2, 8, 10, 14, 18, 24, 27, 31]
    picks = [trigger_offset(q, "inside", 0, f"s{i}") for i in range(200)]
    assert picks == [trigger_offset(q, "inside", 0, f"s{i}") for i in range(200)]
    assert set(picks) == set(inside_boundaries(q))  # every boundary is used
    assert picks != [trigger_offset(q, "inside", 1, f"s{i}") for i in range(200)]
    assert trigger_offset(q, "end", 0, "s0") == len(q)
    with pytest.raises(ValueError, match="inside"):
        trigger_offset(q, "middle", 0, "s0")
    with pytest.raises(ValueError, match="outside the question"):
        LVLMAdapter.insert_trigger(q, TRIGGER, len(q) + 1)


@pytest.mark.parametrize("family", [n for n in MODELS.names("tiny-*") if not n.endswith("-wide")])
def test_spans_stay_right_with_the_trigger_inside(family):
    adapter = build_model(family, seed=0)
    dec = adapter.tokenizer.decode
    samples = generate(len(QUESTION_TYPES), seed=3, types=QUESTION_TYPES)
    offsets = [trigger_offset(s.question, "inside", 0, s.id) for s in samples]
    assert all(at < len(s.question) for s, at in zip(samples, offsets))  # every synthetic question has room
    view = SurrogateView(adapter, samples, [TRIGGER] * len(samples), layers=[], offsets=offsets)
    for s, at, e in zip(samples, offsets, view.encoded):
        clean = adapter.encode(s)
        g, t = e.spans["G"], e.spans["T"]
        assert dec(e.input_ids[g]) == TRIGGER
        assert e.input_ids[t].tolist() == clean.input_ids[clean.spans["T"]].tolist()  # every question token
        assert dec(e.input_ids[t]) == s.prompt_question
        assert int(t.min()) < int(g.min()) and int(g.max()) < int(t.max())  # inside, not at an end
        region = sorted(g.tolist() + t.tolist())
        assert region == list(range(region[0], region[-1] + 1))  # T and G tile the question region
        assert e.question_text == s.replace(question=s.question[:at] + TRIGGER + s.question[at:]).prompt_question
        assert e.input_ids[e.spans["Y"]].tolist() == clean.input_ids[clean.spans["Y"]].tolist()
    appended = SurrogateView(adapter, samples, [TRIGGER] * len(samples), layers=[])
    for s, e in zip(samples, appended.encoded):  # no offsets: the end, as before
        assert e.question_text.startswith(s.question + TRIGGER)
