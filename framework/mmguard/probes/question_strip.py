"""Question strip: drop whatever follows the question itself, where an appended text trigger sits."""
from __future__ import annotations

import re

from mmguard.core.registry import PROBES
from mmguard.probes.base import TextProbe

# A sentence ends at '.' or '!' followed by whitespace or the end ("3.5" and "e.g.x" do not end one), or at
# a newline.
_SENTENCE_END = re.compile(r"[.!](?=\s|$)|\n")


@PROBES.register("question_strip")
class QuestionStrip(TextProbe):
    """Keep the question up to and including its last ``?``; a question without ``?`` keeps its first
    sentence (up to its first ``.`` or ``!`` followed by a space or the end, or up to its first newline,
    which is dropped). A question with neither is kept whole. Only ``sample.question`` is touched:
    multiple-choice options live in ``sample.choices`` and are appended after it when prompting."""

    def __init__(self):
        pass

    def transform_text(self, question: str) -> str:
        mark = question.rfind("?")
        if mark >= 0:
            return question[:mark + 1]
        end = _SENTENCE_END.search(question)
        if end is None:
            return question
        return question[:end.start()] if end.group() == "\n" else question[:end.end()]
