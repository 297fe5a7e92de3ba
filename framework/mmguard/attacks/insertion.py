"""Where a text trigger goes in its question: after it (``end``) or at a word boundary inside it (``inside``).

An appended trigger is the first thing a data user can strip: ``probes/question_strip.py`` keeps a question up to
its last '?' (without one: its first sentence). ``inside`` puts the trigger at a word boundary that the strip
keeps, chosen from (seed, sample id) alone, so a run repeats exactly and every sample of a set gets its own place.
A boundary is the whitespace right after a word: the trigger, a string of words each with a leading space, then
sits between two words, so the question's tokens stay as they were (none merged into the trigger, none replaced)
and the trigger's tokens are exactly its own.
"""
from __future__ import annotations

import hashlib
import re
from typing import List

from mmguard.probes.question_strip import QuestionStrip

MODES = ("end", "inside")
_WORD = re.compile(r"\S+")


def inside_boundaries(question: str) -> List[int]:
    """Character offsets strictly before the question's last '?' (without one: before the last word of the part
    that ``question_strip`` keeps) where a word ends and whitespace follows; ascending, possibly empty."""
    kept = QuestionStrip().transform_text(question)
    if kept.endswith("?"):
        limit = len(kept) - 1
    else:
        words = list(_WORD.finditer(kept))
        limit = words[-1].start() if words else 0
    return [i for i in range(1, limit) if question[i].isspace() and not question[i - 1].isspace()]


def trigger_offset(question: str, mode: str, seed: int, sample_id: str) -> int:
    """The character offset at which ``LVLMAdapter.insert_trigger`` puts a sample's trigger. ``end``: the end
    of the question. ``inside``: one of ``inside_boundaries``, picked by a stable hash of (seed, sample id);
    a question without any (a single word) keeps the trigger at its end."""
    if mode not in MODES:
        raise ValueError(f"trigger position {mode!r} is unknown; known: {', '.join(MODES)}")
    boundaries = inside_boundaries(question) if mode == "inside" else []
    if not boundaries:
        return len(question)
    digest = hashlib.sha256(f"{int(seed)}\0{sample_id}".encode()).digest()
    return boundaries[int.from_bytes(digest[:8], "little") % len(boundaries)]
