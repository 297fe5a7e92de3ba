"""Text normalization of the question: punctuation, case, whitespace (answers and choices are kept)."""
from __future__ import annotations

import re
import string
import unicodedata

from mmguard.probes.base import TextProbe
from mmguard.core.registry import PROBES

_ASCII_PUNCT = set(string.punctuation)
_WS = re.compile(r"\s+")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")


def strip_punctuation(text: str) -> str:
    """Drop ASCII punctuation/symbols and every Unicode punctuation character (category P*)."""
    return "".join(c for c in text if c not in _ASCII_PUNCT and not unicodedata.category(c).startswith("P"))


@PROBES.register("punctuation")
class Punctuation(TextProbe):
    """Remove punctuation from the question (characters are deleted; spacing is left as it is)."""

    def transform_text(self, question: str) -> str:
        return strip_punctuation(question)


@PROBES.register("case")
class Case(TextProbe):
    """Lower-case the question."""

    def transform_text(self, question: str) -> str:
        return question.lower()


@PROBES.register("whitespace")
class Whitespace(TextProbe):
    """Collapse every run of whitespace (newlines, tabs, Unicode spaces) to one space and strip the ends;
    zero-width characters (U+200B-U+200D, U+2060, U+FEFF) are removed too."""

    def transform_text(self, question: str) -> str:
        return _WS.sub(" ", _ZERO_WIDTH.sub("", question)).strip()
