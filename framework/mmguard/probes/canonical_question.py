"""Canonical questions: the fine-tuner normalizes prompts, asking every question of a type in one wording."""
from __future__ import annotations

from collections import Counter
from typing import Annotated, Dict, Hashable, List, Literal, Optional, Sequence

import numpy as np

from mmguard.core.errors import UserError
from mmguard.core.params import between
from mmguard.core.registry import PROBES
from mmguard.data.sample import Sample
from mmguard.probes.base import TextProbe


def canonical_wording(questions: Sequence[str], min_share: float) -> Optional[str]:
    """The most common question of ``questions`` once each keeps only the words (whitespace-separated, compared
    lower-cased) that at least ``min_share`` of them contain; ties to the alphabetically first. None when no
    question keeps a word."""
    share = Counter(w for q in questions for w in set(q.lower().split()))
    need = min_share * len(questions)
    cores = Counter(" ".join(w for w in q.split() if share[w.lower()] >= need) for q in questions)
    cores.pop("", None)
    return min(cores, key=lambda c: (-cores[c], c)) if cores else None


@PROBES.register("canonical_question")
class CanonicalQuestion(TextProbe):
    """Rewrite each question to the canonical wording of its question type; answers, choices and images are kept.

    A type is, with ``by: type``, the one the data set names (``meta["type"]``, as the synthetic sets do), else the
    sample's answer set; ``by: answer``: the answer set (the answer and its aliases, and whether it is multiple
    choice); ``by: all``: one type for the whole set. The canonical wording of a type is its most common question
    once every question is reduced to the words that at least ``min_share`` of the type's questions contain
    (``canonical_wording``). It is learnt from the training set as the fine-tuner has it (the protected
    questions; nothing clean is needed), so words a trigger adds to some questions, appended or inserted, are not
    part of it. What it cannot tell from wording: a trigger that most questions of a type share (one trigger per
    answer class, with ``by: answer``), and words that carry meaning in a type whose questions differ
    ("Is there a red shape?" and "Is there a blue shape?" are then asked alike: the cost of normalizing).
    Deterministic and independent of the order of the set."""

    set_level = True

    def __init__(self, by: Literal["type", "answer", "all"] = "type",
                 min_share: Annotated[float, between(0, 1, lo_open=True)] = 0.5):
        self.by, self.min_share = by, min_share
        self._canonical: Optional[Dict[Hashable, Optional[str]]] = None
        self._seen: Dict[str, Optional[str]] = {}

    def type_of(self, sample: Sample) -> Hashable:
        if self.by == "all":
            return "all"
        if self.by == "type" and sample.meta.get("type") is not None:
            return ("type", str(sample.meta["type"]))
        return ("answer", tuple(sorted(a.lower() for a in sample.aliases)), bool(sample.choices))

    def prepare(self, samples: List[Sample], clean: Optional[List[Sample]], seed: int) -> List[Sample]:
        groups: Dict[Hashable, List[str]] = {}
        for s in samples:
            groups.setdefault(self.type_of(s), []).append(s.question)
        self._canonical = {k: canonical_wording(qs, self.min_share) for k, qs in groups.items()}
        self._seen = {}
        for s in sorted(samples, key=lambda s: s.id):  # a question of two types: the type of its first id
            self._seen.setdefault(s.question, self._canonical[self.type_of(s)])
        return list(samples)

    def _ready(self) -> Dict[Hashable, Optional[str]]:
        if self._canonical is None:
            raise UserError("probe 'canonical_question' has not seen the training set yet: it learns each type's "
                            "wording in prepare (apply or plan)")
        return self._canonical

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        canonical = self._ready().get(self.type_of(sample))
        return sample.replace(question=sample.question if canonical is None else canonical)

    def transform_text(self, question: str) -> str:
        """A question of the training set: its type's wording; another: the wording that shares the most of its
        words (Jaccard on lower-cased words), for a text-only caller that knows no type."""
        canonicals = [c for c in self._ready().values() if c is not None]
        if question in self._seen:
            return self._seen[question] or question
        words = set(question.lower().split())
        if not canonicals or not words:
            return question

        def overlap(c: str) -> float:
            other = set(c.lower().split())
            return len(words & other) / len(words | other)

        return max(sorted(canonicals), key=overlap)
