"""Data set loaders for files on disk and for the synthetic generator.

Every loader is registered in :data:`mmguard.core.registry.DATASETS` and returns ``{"train": [...], "test": [...]}``
(lists of :class:`~mmguard.data.sample.Sample`). A recipe names one with ``data: {name: llava_json, train: PATH,
test: PATH}``; the keys after ``name`` are the loader's keyword arguments.

File formats:

* ``llava_json``: DESIGN.md's format, a JSON list of ``{"id", "image", "conversations", "answers"?, "choices"?}``;
* ``sharegpt``: ``{"id"?, "image" | "images", "conversations" | "messages"}`` with turns written either
  ``{"from", "value"}`` or ``{"role", "content"}`` (LLaMA-Factory's multimodal ShareGPT);
* ``jsonl``: one ``{"id"?, "image", "question", "answer", "answers"?, "choices"?, "meta"?}`` object per line.

Image paths are relative to the folder of the file that names them (or to ``image_root`` when given). A
conversation with several question/answer turns gives one sample per turn pair (ids ``ID``, ``ID_1``, ...);
entries without an image are skipped with a warning. Errors raise :class:`DataFormatError`, whose message names
the file, the entry (index and id) and the field.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mmguard.core.constants import LETTERS
from mmguard.data import synthetic
from mmguard.data.sample import Sample
from mmguard.core.registry import DATASETS

PathLike = Union[str, Path]
Splits = Dict[str, List[Sample]]
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot"}
SKIPPED_ROLES = {"system"}


class DataFormatError(ValueError):
    """A data file that does not follow its format; the message names file, entry and field."""

    def __init__(self, file: PathLike, problem: str, *, entry: Optional[Union[int, str]] = None,
                 entry_id: Any = None, field: Optional[str] = None):
        self.file, self.entry, self.entry_id, self.field, self.problem = str(file), entry, entry_id, field, problem
        where = [self.file]
        if entry is not None:
            label = entry if isinstance(entry, str) else f"entry {entry}"
            where.append(label + (f" (id {entry_id!r})" if entry_id is not None else ""))
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where) + f": {problem}")


# ---------------------------------------------------------------------------------------------------------------
# helpers shared by the loaders (and by export.py)

def strip_image_token(text: str) -> str:
    """Drop the ``<image>`` placeholder (and the newline that sits beside it) from a question."""
    text = text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "")
    return text.strip()


def choices_suffix(choices: Sequence[str]) -> str:
    """What :attr:`Sample.prompt_question` appends to the question for these options."""
    return Sample("_", "", "", "", choices=list(choices)).prompt_question


def strip_choices_suffix(question: str, choices: Optional[Sequence[str]]) -> str:
    """Undo :attr:`Sample.prompt_question` (export writes the question with its options, so outside trainers see
    them); a question without that exact suffix is returned unchanged."""
    if choices:
        suffix = choices_suffix(choices)
        if question.endswith(suffix) and len(question) > len(suffix):
            return question[: -len(suffix)]
    return question


def split_train_test(samples: Sequence[Sample], test_fraction: float, seed: int = 0) -> Tuple[list, list]:
    """A seeded partition (no sample in both halves)."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1], got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_test = int(round(len(samples) * test_fraction))
    test_idx, train_idx = sorted(order[:n_test].tolist()), sorted(order[n_test:].tolist())
    return [samples[i] for i in train_idx], [samples[i] for i in test_idx]


def _limit(samples: List[Sample], limit: Optional[int]) -> List[Sample]:
    return samples if limit is None else samples[: int(limit)]


def _resolve_image(value: Any, base: Path, file: Path, entry: int, entry_id: Any, field: str,
                   check: bool) -> Path:
    if not isinstance(value, str) or not value:
        raise DataFormatError(file, f"expected an image path string, got {value!r}", entry=entry,
                              entry_id=entry_id, field=field)
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if check and not path.is_file():
        raise DataFormatError(file, f"image file {str(path)!r} does not exist", entry=entry, entry_id=entry_id,
                              field=field)
    return path


def _string_list(value: Any, file: Path, entry: int, entry_id: Any, field: str) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise DataFormatError(file, f"expected a list of strings or null, got {type(value).__name__}",
                              entry=entry, entry_id=entry_id, field=field)
    out = []
    for k, v in enumerate(value):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise DataFormatError(file, f"item {k} is {type(v).__name__}, expected a string", entry=entry,
                                  entry_id=entry_id, field=field)
        out.append(v)
    return out


def _answer_for_choices(answer: str, choices: Optional[List[str]], file: Path, entry: int, entry_id: Any,
                        field: str) -> str:
    """Multiple choice keeps the option letter as the answer; an answer given as the option's text maps to it."""
    if not choices:
        return answer
    letters = LETTERS[: len(choices)]
    a = answer.strip()
    if len(a) == 1 and a.upper() in letters:
        return a.upper()
    if a in choices:
        return letters[choices.index(a)]
    raise DataFormatError(file, f"multiple-choice answer {answer!r} is neither an option letter "
                          f"({', '.join(letters)}) nor one of the choices {choices}", entry=entry,
                          entry_id=entry_id, field=field)


def _make_sample(*, file: Path, entry: int, entry_id: Any, sid: str, image: Path, question: str, answer: Any,
                 aliases: Optional[List[str]], choices: Optional[List[str]], meta: Any,
                 answer_field: str) -> Sample:
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        raise DataFormatError(file, f"expected a string answer, got {answer!r}", entry=entry, entry_id=entry_id,
                              field=answer_field)
    if meta is not None and not isinstance(meta, dict):
        raise DataFormatError(file, "expected an object", entry=entry, entry_id=entry_id, field="meta")
    answer = _answer_for_choices(answer, choices, file, entry, entry_id, answer_field)
    question = strip_choices_suffix(strip_image_token(question), choices)
    return Sample(sid, image, question, answer, list(aliases or []), choices=choices, meta=dict(meta or {}))


def _read_json(file: PathLike) -> Tuple[Path, Any]:
    file = Path(file).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data file {str(file)!r} does not exist")
    try:
        with open(file, encoding="utf-8") as fh:
            return file, json.load(fh)
    except json.JSONDecodeError as err:
        raise DataFormatError(file, f"not valid JSON: {err}") from None


def _text_of(content: Any) -> Optional[str]:
    """A turn's text: a string, or a list of parts ({"type": "text", "text": ...} / {"type": "image"})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image":
                parts.append("<image>")
            else:
                return None
        return "\n".join(parts)
    return None


def _turn_pairs(turns: Any, file: Path, entry: int, entry_id: Any, field: str) -> List[Tuple[str, str, str]]:
    """(question, answer, answer field path) for each human turn followed by an assistant turn."""
    if not isinstance(turns, list) or not turns:
        raise DataFormatError(file, "expected a non-empty list of turns", entry=entry, entry_id=entry_id,
                              field=field)
    pairs, pending = [], None
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataFormatError(file, f"turn {t} is not an object", entry=entry, entry_id=entry_id, field=field)
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        role = turn.get(role_key)
        if role not in HUMAN_ROLES | ASSISTANT_ROLES | SKIPPED_ROLES:
            raise DataFormatError(file, f"unknown speaker {role!r} (expected one of "
                                  f"{sorted(HUMAN_ROLES | ASSISTANT_ROLES | SKIPPED_ROLES)})", entry=entry,
                                  entry_id=entry_id, field=f"{field}[{t}].{role_key}")
        text = _text_of(turn.get(text_key))
        if text is None:
            raise DataFormatError(file, f"expected text, got {turn.get(text_key)!r}", entry=entry,
                                  entry_id=entry_id, field=f"{field}[{t}].{text_key}")
        if role in HUMAN_ROLES:
            pending = text
        elif role in ASSISTANT_ROLES and pending is not None:
            pairs.append((pending, text, f"{field}[{t}].{text_key}"))
            pending = None
    if not pairs:
        raise DataFormatError(file, "no question turn followed by an answer turn", entry=entry, entry_id=entry_id,
                              field=field)
    return pairs


def _samples_from_conversation(file: Path, entry: int, item: Any, base: Path, check_images: bool,
                               skipped: List[int]) -> List[Sample]:
    if not isinstance(item, dict):
        raise DataFormatError(file, f"expected an object, got {type(item).__name__}", entry=entry)
    entry_id = item.get("id")
    sid = str(entry_id) if entry_id is not None else f"{entry:06d}"
    image_field = "image"
    if "image" in item and item["image"] is not None:
        image_value = item["image"]
    elif item.get("images"):
        images = item["images"]
        image_field = "images"
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or len(images) != 1:
            raise DataFormatError(file, "exactly one image per entry is supported, got "
                                  f"{len(images) if isinstance(images, list) else images!r}", entry=entry,
                                  entry_id=entry_id, field="images")
        image_value, image_field = images[0], "images[0]"
    else:
        skipped.append(entry)
        return []
    image = _resolve_image(image_value, base, file, entry, entry_id, image_field, check_images)
    turns_field = "conversations" if "conversations" in item else "messages"
    if turns_field not in item:
        raise DataFormatError(file, "missing (expected 'conversations' or 'messages')", entry=entry,
                              entry_id=entry_id, field="conversations")
    pairs = _turn_pairs(item[turns_field], file, entry, entry_id, turns_field)
    aliases = _string_list(item.get("answers"), file, entry, entry_id, "answers")
    choices = _string_list(item.get("choices"), file, entry, entry_id, "choices")
    out = []
    for k, (question, answer, answer_field) in enumerate(pairs):
        first = k == 0  # answers / choices / meta describe the first turn pair
        out.append(_make_sample(file=file, entry=entry, entry_id=entry_id, sid=sid if first else f"{sid}_{k}",
                                image=image, question=question, answer=answer,
                                aliases=aliases if first else None, choices=choices if first else None,
                                meta=item.get("meta") if first else None, answer_field=answer_field))
    return out


def _warn_skipped(file: Path, skipped: List[int]) -> None:
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"{file}: skipped {len(skipped)} entries without an image (entries {shown})", stacklevel=3)


def _check_unique(file: Path, samples: Sequence[Sample]) -> None:
    seen = set()
    for s in samples:
        if s.id in seen:
            raise DataFormatError(file, f"duplicate sample id {s.id!r}", field="id")
        seen.add(s.id)


def read_conversation_file(file: PathLike, *, image_root: Optional[PathLike] = None,
                           check_images: bool = True) -> List[Sample]:
    """Samples of a LLaVA-JSON or ShareGPT file (a JSON list of conversation entries)."""
    file, data = _read_json(file)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataFormatError(file, f"expected a JSON list of entries at the top level, got {type(data).__name__}")
    base = Path(image_root).expanduser() if image_root is not None else file.parent
    samples: List[Sample] = []
    skipped: List[int] = []
    for i, item in enumerate(data):
        samples.extend(_samples_from_conversation(file, i, item, base, check_images, skipped))
    _warn_skipped(file, skipped)
    _check_unique(file, samples)
    return samples


def read_jsonl(file: PathLike, *, image_root: Optional[PathLike] = None, check_images: bool = True) -> List[Sample]:
    """Samples of a JSON-lines file; entries are numbered by line (1-based) in errors."""
    file = Path(file).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"data file {str(file)!r} does not exist")
    base = Path(image_root).expanduser() if image_root is not None else file.parent
    samples: List[Sample] = []
    skipped: List[int] = []
    with open(file, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            entry = f"line {lineno}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(file, f"not valid JSON: {err}", entry=entry) from None
            if not isinstance(item, dict):
                raise DataFormatError(file, f"expected an object, got {type(item).__name__}", entry=entry)
            entry_id = item.get("id")
            if item.get("image") is None:
                skipped.append(lineno)
                continue
            for key in ("question", "answer"):
                if key not in item:
                    raise DataFormatError(file, "missing", entry=entry, entry_id=entry_id, field=key)
            if not isinstance(item["question"], str):
                raise DataFormatError(file, f"expected a string, got {item['question']!r}", entry=entry,
                                      entry_id=entry_id, field="question")
            image = _resolve_image(item["image"], base, file, entry, entry_id, "image", check_images)
            samples.append(_make_sample(
                file=file, entry=entry, entry_id=entry_id,
                sid=str(entry_id) if entry_id is not None else f"{lineno:06d}", image=image,
                question=item["question"], answer=item["answer"],
                aliases=_string_list(item.get("answers"), file, entry, entry_id, "answers"),
                choices=_string_list(item.get("choices"), file, entry, entry_id, "choices"),
                meta=item.get("meta"), answer_field="answer"))
    _warn_skipped(file, skipped)
    _check_unique(file, samples)
    return samples


def _file_splits(reader, train: Optional[PathLike], test: Optional[PathLike], *, limit: Optional[int],
                 test_fraction: float, split_seed: int, image_root: Optional[PathLike],
                 check_images: bool, loader: str) -> Splits:
    if train is None and test is None:
        raise ValueError(f"dataset '{loader}' needs train=PATH (and test=PATH, or test_fraction to split train)")
    read = lambda p: reader(p, image_root=image_root, check_images=check_images)  # noqa: E731
    train_s = read(train) if train is not None else []
    if test is not None:
        test_s = read(test)
    elif test_fraction:
        train_s, test_s = split_train_test(train_s, test_fraction, split_seed)
    else:
        test_s = []
    return {"train": _limit(train_s, limit), "test": _limit(test_s, limit)}


# ---------------------------------------------------------------------------------------------------------------
# registered loaders

@DATASETS.register("synthetic", kind="generated")
def load_synthetic(n_train: int = 64, n_test: int = 64, types: Sequence[str] = ("colour",), seed: int = 0,
                   size: int = 32, limit: Optional[int] = None, contrast: float = 1.0) -> Splits:
    """The synthetic VQA generator; train and test come from different seed streams (ids ``train*``/``test*``)."""
    contrast = float(contrast)
    train_seed, test_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    types = tuple(types) if not isinstance(types, str) else (types,)
    return {"train": _limit(synthetic.generate(int(n_train), train_seed, types, int(size), prefix="train",
                                               contrast=contrast), limit),
            "test": _limit(synthetic.generate(int(n_test), test_seed, types, int(size), prefix="test",
                                              contrast=contrast), limit)}


@DATASETS.register("llava_json", kind="file")
def load_llava_json(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *,
                    limit: Optional[int] = None, test_fraction: float = 0.0, split_seed: int = 0,
                    image_root: Optional[PathLike] = None, check_images: bool = True) -> Splits:
    """DESIGN.md's LLaVA JSON; without ``test``, ``test_fraction`` > 0 carves a test split out of ``train``."""
    return _file_splits(read_conversation_file, train, test, limit=limit, test_fraction=test_fraction,
                        split_seed=split_seed, image_root=image_root, check_images=check_images, loader="llava_json")


@DATASETS.register("sharegpt", kind="file")
def load_sharegpt(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *,
                  limit: Optional[int] = None, test_fraction: float = 0.0, split_seed: int = 0,
                  image_root: Optional[PathLike] = None, check_images: bool = True) -> Splits:
    """ShareGPT JSON (``conversations``/``messages``, ``from``/``value`` or ``role``/``content``)."""
    return _file_splits(read_conversation_file, train, test, limit=limit, test_fraction=test_fraction,
                        split_seed=split_seed, image_root=image_root, check_images=check_images, loader="sharegpt")


@DATASETS.register("jsonl", kind="file")
def load_jsonl(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *,
               limit: Optional[int] = None, test_fraction: float = 0.0, split_seed: int = 0,
               image_root: Optional[PathLike] = None, check_images: bool = True) -> Splits:
    """One ``{"image", "question", "answer", "answers"?, "choices"?}`` object per line."""
    return _file_splits(read_jsonl, train, test, limit=limit, test_fraction=test_fraction,
                        split_seed=split_seed, image_root=image_root, check_images=check_images, loader="jsonl")

