"""Answer accuracy (METHOD.md, Evaluation): option letters for multiple choice, normalized exact match otherwise.

``normalize_answer`` lower-cases, maps number words to digits ("Two" -> "2", "twenty-one" -> "21"), removes
punctuation (keeping a decimal point between digits and dropping thousands separators) and the articles
a / an / the, and collapses whitespace. ``is_correct`` compares a model's prediction with a sample: for a
multiple-choice sample it extracts the option letter ("B", "(b)", "B. red", "The answer is B", or the option's
text itself); otherwise the normalized prediction must equal the normalized form of one of the aliases.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch
from torchmetrics import Metric

from mmguard.core.constants import LETTERS

ARTICLES = {"a", "an", "the"}
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
          "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
NUMBER_WORDS = {**{w: i for i, w in enumerate(_UNITS)}, **_TENS}


def _numbers_to_digits(tokens: Sequence[str]) -> list:
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _TENS and i + 1 < len(tokens) and tokens[i + 1] in NUMBER_WORDS \
                and 1 <= NUMBER_WORDS[tokens[i + 1]] <= 9:
            out.append(str(_TENS[tok] + NUMBER_WORDS[tokens[i + 1]]))
            i += 2
            continue
        out.append(str(NUMBER_WORDS[tok]) if tok in NUMBER_WORDS else tok)
        i += 1
    return out


def normalize_answer(text: Any) -> str:
    """Lower case, number words -> digits, no punctuation, no articles, single spaces."""
    s = str(text).lower().strip()
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)          # 1,000 -> 1000
    s = re.sub(r"['\u2019`]", "", s)                  # don't -> dont
    s = re.sub(r"(?!(?<=\d)\.(?=\d))[^\w\s]|_", " ", s)  # punctuation -> space, 3.5 stays
    tokens = _numbers_to_digits(s.split())
    return " ".join(t for t in tokens if t not in ARTICLES)


_WHOLE = re.compile(r"^\s*[\(\[]?\s*([A-Ja-j])\s*[\)\]]?\s*[.:]?\s*$")
_BRACKET_PREFIX = re.compile(r"^\s*[\(\[]\s*([A-Ja-j])\s*[\)\]]")
_DELIM_PREFIX = re.compile(r"^\s*([A-Ja-j])\s*[.:)]($|\s)")
_STATED = re.compile(r"\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?\s*[:\-]?\s*"
                     r"(?:option\s+)?(\(|\[)?([A-Ja-j])(\)|\])?(?![A-Za-z0-9])", re.I)
_ANSWER_LEAD = re.compile(r"^\s*(?:the\s+)?(?:correct\s+|final\s+)?answer\s*(?:is|:)\s*", re.I)


def extract_choice(prediction: str, choices: Sequence[str]) -> Optional[str]:
    """The option letter a prediction picks among ``choices``, or None when it names none.

    Accepted: a bare letter ("B", "b", "(b)", "B."), a letter prefix ("B. red", "(B) red", "b) red"), a stated
    letter ("The answer is B", "Answer: (C)", "option d."), or the option text itself ("red", "The answer is red").
    A lower-case letter counts only when bracketed, followed by punctuation or alone, so that the article in
    "a red circle" is not read as option A.
    """
    letters = LETTERS[: len(choices)]
    text = str(prediction)

    def ok(letter: str) -> Optional[str]:
        return letter.upper() if letter.upper() in letters else None

    for pattern in (_WHOLE, _BRACKET_PREFIX, _DELIM_PREFIX):
        m = pattern.match(text)
        if m:
            return ok(m.group(1))
    for m in _STATED.finditer(text):
        letter, bracketed = m.group(2), bool(m.group(1) and m.group(3))
        rest = text[m.end():]
        if letter.isupper() or bracketed or not re.match(r"\s*[A-Za-z0-9]", rest):
            if ok(letter):
                return ok(letter)
    norm_choices = [normalize_answer(c) for c in choices]
    for candidate in (text, _ANSWER_LEAD.sub("", text)):
        norm = normalize_answer(candidate)
        if norm and norm in norm_choices and norm_choices.count(norm) == 1:
            return letters[norm_choices.index(norm)]
    return None


def gold_letter(sample: Any) -> Optional[str]:
    """The correct option letter of a multiple-choice sample (its answer is a letter or an option's text)."""
    choices = getattr(sample, "choices", None)
    if not choices:
        return None
    answer = str(sample.answer).strip()
    letters = LETTERS[: len(choices)]
    if len(answer) == 1 and answer.upper() in letters:
        return answer.upper()
    m = _WHOLE.match(answer)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    norm = normalize_answer(answer)
    for i, c in enumerate(choices):
        if normalize_answer(c) == norm:
            return letters[i]
    return None


def is_correct(prediction: str, sample: Any) -> bool:
    """Whether ``prediction`` answers ``sample`` (a Sample, or anything with answer / aliases / choices)."""
    gold = gold_letter(sample)
    if gold is not None:
        return extract_choice(prediction, sample.choices) == gold
    aliases = list(getattr(sample, "aliases", None) or []) or [sample.answer]
    pred = normalize_answer(prediction)
    for alias in aliases:
        ref = normalize_answer(alias)
        if ref == pred and (ref or str(alias).strip().lower() == str(prediction).strip().lower()):
            return True
    return False


class VQAAccuracy(Metric):
    """Fraction of correct predictions; ``update(predictions, samples)``. States sum across DDP ranks.

    ``compute()`` is NaN before any update (no predictions to score).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], samples: Sequence[Any]) -> None:  # type: ignore[override]
        if isinstance(predictions, str):
            predictions = [predictions]
            samples = [samples] if not isinstance(samples, (list, tuple)) else samples
        if len(predictions) != len(samples):
            raise ValueError(f"VQAAccuracy.update: {len(predictions)} predictions for {len(samples)} samples")
        self.correct += sum(bool(is_correct(p, s)) for p, s in zip(predictions, samples))
        self.total += len(samples)

    def compute(self) -> torch.Tensor:
        if int(self.total) == 0:
            return torch.tensor(float("nan"))
        return self.correct.float() / self.total.float()
