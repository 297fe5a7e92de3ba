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
entries without an image are skipped with a warning. Image paths must stay inside that folder unless
``allow_outside`` is true (see :mod:`mmguard.data.files`). Empty questions and answers are refused. Errors raise
:class:`DataFormatError` (a ``UserError``), whose message names the file, the entry (index and id) and the field.

``seed`` is a loader's data draw: the synthetic generator's images and classes; for files, the ``test_fraction``
partition, the ``per_answer`` class-balanced train subsample and the ``limit`` subsample (kept in file order). A
recipe that leaves ``data.seed`` unset passes its own seed (``config/spec.py``), so its seeds vary the data;
``data: {seed: 0}`` pins them.

Loaders only read the files; :func:`mmguard.data.checks.check_splits` then decodes every image once, before any
work, and refuses the ones that cannot be used.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mmguard.core.constants import LETTERS
from mmguard.core.errors import UserError
from mmguard.core.params import PositiveInt, at_least, between
from mmguard.core.registry import DATASETS
from mmguard.data import synthetic
from mmguard.data.subsample import draw_limit, draw_per_answer, split_train_test
from mmguard.data.errors import DataFormatError, Origin
from mmguard.data.files import data_file, image_folder, parse_json, read_text, resolve_image
from mmguard.data.sample import Sample

PathLike = Union[str, Path]
Splits = Dict[str, List[Sample]]
Limit = Optional[PositiveInt]
TestFraction = Annotated[float, between(0, 1, hi_open=True)]
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot"}
SKIPPED_ROLES = {"system"}


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


def _refuse(file: Path, entry: Union[int, str], entry_id: Any, field: str, problem: str) -> DataFormatError:
    return DataFormatError(file, problem, entry=entry, entry_id=entry_id, field=field)


def _entry_id(item: dict, file: Path, entry: Union[int, str]) -> Any:
    """The entry's ``id`` as written: a non-empty string or an integer (or absent)."""
    value = item.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _refuse(file, entry, None, "id", f"expected a non-empty string or an integer, got {value!r}")
    return value


def _string_list(value: Any, file: Path, entry: Union[int, str], entry_id: Any, field: str) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _refuse(file, entry, entry_id, field, f"expected a list of strings or null, got {type(value).__name__}")
    out = []
    for k, v in enumerate(value):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str):
            raise _refuse(file, entry, entry_id, field, f"item {k} is {type(v).__name__}, expected a string")
        if not v.strip():
            raise _refuse(file, entry, entry_id, field, f"item {k} is empty")
        out.append(v)
    return out


def _answer_for_choices(answer: str, choices: Optional[List[str]], file: Path, entry: Union[int, str],
                        entry_id: Any, field: str) -> str:
    """Multiple choice keeps the option letter as the answer; an answer given as the option's text maps to it."""
    if not choices:
        return answer
    letters = LETTERS[: len(choices)]
    a = answer.strip()
    if len(a) == 1 and a.upper() in letters:
        return a.upper()
    if a in choices:
        return letters[choices.index(a)]
    raise _refuse(file, entry, entry_id, field, f"multiple-choice answer {answer!r} is neither an option letter "
                  f"({', '.join(letters)}) nor one of the choices {choices}")


def _make_sample(*, file: Path, entry: Union[int, str], entry_id: Any, sid: str, image: Path, question: str,
                 answer: Any, aliases: Optional[List[str]], choices: Optional[List[str]], meta: Any,
                 fields: Dict[str, str]) -> Sample:
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        raise _refuse(file, entry, entry_id, fields["answer"], f"expected a string answer, got {answer!r}")
    if not answer.strip():
        raise _refuse(file, entry, entry_id, fields["answer"], "empty answer")
    if meta is not None and not isinstance(meta, dict):
        raise _refuse(file, entry, entry_id, "meta", "expected an object")
    answer = _answer_for_choices(answer, choices, file, entry, entry_id, fields["answer"])
    question = strip_choices_suffix(strip_image_token(question), choices)
    if not question.strip():
        raise _refuse(file, entry, entry_id, fields["question"], "empty question (nothing besides <image>)")
    return Sample(sid, image, question, answer, list(aliases or []), choices=choices, meta=dict(meta or {}),
                  origin=Origin(str(file), entry, entry_id, fields))


def _text_of(content: Any) -> Optional[str]:
    """A turn's text: a string, or a list of parts ({"type": "text", "text": ...} / {"type": "image"})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text", ""), str):
                parts.append(part.get("text", ""))
            elif isinstance(part, dict) and part.get("type") == "image":
                parts.append("<image>")
            else:
                return None
        return "\n".join(parts)
    return None


def _turn_pairs(turns: Any, file: Path, entry: int, entry_id: Any, field: str) -> List[Tuple[str, str, str, str]]:
    """(question, its field path, answer, its field path) for each human turn followed by an assistant turn."""
    if not isinstance(turns, list) or not turns:
        raise _refuse(file, entry, entry_id, field, "expected a non-empty list of turns")
    known = sorted(HUMAN_ROLES | ASSISTANT_ROLES | SKIPPED_ROLES)
    pairs, pending = [], None
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise _refuse(file, entry, entry_id, field, f"turn {t} is not an object")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        role = turn.get(role_key)
        if not isinstance(role, str) or role not in known:
            raise _refuse(file, entry, entry_id, f"{field}[{t}].{role_key}",
                          f"unknown speaker {role!r} (expected one of {known})")
        text = _text_of(turn.get(text_key))
        if text is None:
            raise _refuse(file, entry, entry_id, f"{field}[{t}].{text_key}",
                          f"expected text, got {turn.get(text_key)!r}")
        if role in HUMAN_ROLES:
            pending = (text, f"{field}[{t}].{text_key}")
        elif role in ASSISTANT_ROLES and pending is not None:
            pairs.append((*pending, text, f"{field}[{t}].{text_key}"))
            pending = None
    if not pairs:
        raise _refuse(file, entry, entry_id, field, "no question turn followed by an answer turn")
    return pairs


def _samples_from_conversation(file: Path, entry: int, item: Any, folder: Tuple[Path, Path], check_images: bool,
                               allow_outside: bool, skipped: List[int]) -> List[Sample]:
    if not isinstance(item, dict):
        raise DataFormatError(file, f"expected an object, got {type(item).__name__}", entry=entry)
    entry_id = _entry_id(item, file, entry)
    sid = str(entry_id) if entry_id is not None else f"{entry:06d}"
    image_field = "image"
    if "image" in item and item["image"] is not None:
        image_value = item["image"]
    elif item.get("images"):
        images = item["images"]
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or len(images) != 1:
            raise _refuse(file, entry, entry_id, "images", "exactly one image per entry is supported, got "
                          f"{len(images) if isinstance(images, list) else images!r}")
        image_value, image_field = images[0], "images[0]"
    else:
        skipped.append(entry)
        return []
    image = resolve_image(image_value, *folder, file=file, entry=entry, entry_id=entry_id, field=image_field,
                          check=check_images, allow_outside=allow_outside)
    turns_field = "conversations" if "conversations" in item else "messages"
    if turns_field not in item:
        raise _refuse(file, entry, entry_id, "conversations", "missing (expected 'conversations' or 'messages')")
    pairs = _turn_pairs(item[turns_field], file, entry, entry_id, turns_field)
    aliases = _string_list(item.get("answers"), file, entry, entry_id, "answers")
    choices = _string_list(item.get("choices"), file, entry, entry_id, "choices")
    out = []
    for k, (question, question_field, answer, answer_field) in enumerate(pairs):
        first = k == 0  # answers / choices / meta describe the first turn pair
        out.append(_make_sample(file=file, entry=entry, entry_id=entry_id, sid=sid if first else f"{sid}_{k}",
                                image=image, question=question, answer=answer,
                                aliases=aliases if first else None, choices=choices if first else None,
                                meta=item.get("meta") if first else None,
                                fields={"id": "id", "image": image_field, "question": question_field,
                                        "answer": answer_field}))
    return out


def _warn_skipped(file: Path, skipped: List[Any]) -> None:
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"{file}: skipped {len(skipped)} entries without an image (entries {shown})", stacklevel=3)


def _check_unique(samples: Sequence[Sample]) -> None:
    first: Dict[str, Sample] = {}
    for s in samples:
        other = first.setdefault(s.id, s)
        if other is not s:
            raise s.error("id", f"duplicate sample id {s.id!r} (also entry {other.origin.entry})")


def read_conversation_file(file: PathLike, *, image_root: Optional[PathLike] = None, check_images: bool = True,
                           allow_outside: bool = False) -> List[Sample]:
    """Samples of a LLaVA-JSON or ShareGPT file (a JSON list of conversation entries)."""
    file = data_file(file)
    data = parse_json(read_text(file), file)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataFormatError(file, f"expected a JSON list of entries at the top level, got {type(data).__name__}")
    folder = image_folder(file, image_root)
    samples: List[Sample] = []
    skipped: List[int] = []
    for i, item in enumerate(data):
        samples.extend(_samples_from_conversation(file, i, item, folder, check_images, allow_outside, skipped))
    _warn_skipped(file, skipped)
    _check_unique(samples)
    return samples


def read_jsonl(file: PathLike, *, image_root: Optional[PathLike] = None, check_images: bool = True,
               allow_outside: bool = False) -> List[Sample]:
    """Samples of a JSON-lines file; entries are numbered by line (1-based) in errors."""
    file = data_file(file)
    text = read_text(file)
    folder = image_folder(file, image_root)
    samples: List[Sample] = []
    skipped: List[int] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        entry = f"line {lineno}"
        item = parse_json(line, file, entry)
        if not isinstance(item, dict):
            raise DataFormatError(file, f"expected an object, got {type(item).__name__}", entry=entry)
        entry_id = _entry_id(item, file, entry)
        if item.get("image") is None:
            skipped.append(lineno)
            continue
        for key in ("question", "answer"):
            if key not in item:
                raise _refuse(file, entry, entry_id, key, "missing")
        if not isinstance(item["question"], str):
            raise _refuse(file, entry, entry_id, "question", f"expected a string, got {item['question']!r}")
        image = resolve_image(item["image"], *folder, file=file, entry=entry, entry_id=entry_id, field="image",
                              check=check_images, allow_outside=allow_outside)
        samples.append(_make_sample(
            file=file, entry=entry, entry_id=entry_id,
            sid=str(entry_id) if entry_id is not None else f"{lineno:06d}", image=image,
            question=item["question"], answer=item["answer"],
            aliases=_string_list(item.get("answers"), file, entry, entry_id, "answers"),
            choices=_string_list(item.get("choices"), file, entry, entry_id, "choices"),
            meta=item.get("meta"), fields={"id": "id", "image": "image", "question": "question", "answer": "answer"}))
    _warn_skipped(file, skipped)
    _check_unique(samples)
    return samples


def _file_splits(reader, train: Optional[PathLike], test: Optional[PathLike], *, limit: Optional[int],
                 test_fraction: float, seed: int, image_root: Optional[PathLike], check_images: bool,
                 allow_outside: bool, loader: str, per_answer: Optional[int] = None) -> Splits:
    if train is None and test is None:
        raise UserError(f"dataset '{loader}' needs train=PATH (and test=PATH, or test_fraction to split train)")

    def read(path: PathLike) -> List[Sample]:
        return reader(path, image_root=image_root, check_images=check_images, allow_outside=allow_outside)

    train_s = read(train) if train is not None else []
    if test is not None:
        test_s = read(test)
    elif test_fraction:
        train_s, test_s = split_train_test(train_s, test_fraction, seed)
    else:
        test_s = []
    return {"train": draw_limit(draw_per_answer(train_s, per_answer, seed), limit, seed, 0),
            "test": draw_limit(test_s, limit, seed, 1)}


# ---------------------------------------------------------------------------------------------------------------
# registered loaders

@DATASETS.register("synthetic", kind="generated")
def load_synthetic(n_train: PositiveInt = 64, n_test: PositiveInt = 64,
                   types: Sequence[str] = ("colour",), seed: int = 0,
                   size: Annotated[int, at_least(8)] = 32, limit: Limit = None,
                   contrast: Annotated[float, between(0, 1, lo_open=True)] = 1.0) -> Splits:
    """The synthetic VQA generator; train and test come from different seed streams (ids ``train*``/``test*``).
    The train split draws its classes at random; the test split is class-balanced per question type, so that a
    victim that collapses to one answer scores 1/K (exactly when K divides the type's share of ``n_test``)."""
    contrast = float(contrast)
    train_seed, test_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    types = tuple(types) if not isinstance(types, str) else (types,)
    return {"train": draw_limit(synthetic.generate(int(n_train), train_seed, types, int(size), prefix="train",
                                               contrast=contrast), limit),
            "test": draw_limit(synthetic.generate(int(n_test), test_seed, types, int(size), prefix="test",
                                              contrast=contrast, balanced=True), limit)}


@DATASETS.register("llava_json", kind="file")
def load_llava_json(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *, limit: Limit = None,
                    test_fraction: TestFraction = 0.0, seed: int = 0, image_root: Optional[PathLike] = None,
                    check_images: bool = True, allow_outside: bool = False,
                    per_answer: Limit = None) -> Splits:
    """DESIGN.md's LLaVA JSON; without ``test``, ``test_fraction`` > 0 carves a test split out of ``train``."""
    return _file_splits(read_conversation_file, train, test, limit=limit, test_fraction=test_fraction,
                        seed=seed, image_root=image_root, check_images=check_images,
                        allow_outside=allow_outside, loader="llava_json", per_answer=per_answer)


@DATASETS.register("sharegpt", kind="file")
def load_sharegpt(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *, limit: Limit = None,
                  test_fraction: TestFraction = 0.0, seed: int = 0, image_root: Optional[PathLike] = None,
                  check_images: bool = True, allow_outside: bool = False,
                  per_answer: Limit = None) -> Splits:
    """ShareGPT JSON (``conversations``/``messages``, ``from``/``value`` or ``role``/``content``)."""
    return _file_splits(read_conversation_file, train, test, limit=limit, test_fraction=test_fraction,
                        seed=seed, image_root=image_root, check_images=check_images,
                        allow_outside=allow_outside, loader="sharegpt", per_answer=per_answer)


@DATASETS.register("jsonl", kind="file")
def load_jsonl(train: Optional[PathLike] = None, test: Optional[PathLike] = None, *, limit: Limit = None,
               test_fraction: TestFraction = 0.0, seed: int = 0, image_root: Optional[PathLike] = None,
               check_images: bool = True, allow_outside: bool = False,
               per_answer: Limit = None) -> Splits:
    """One ``{"image", "question", "answer", "answers"?, "choices"?}`` object per line."""
    return _file_splits(read_jsonl, train, test, limit=limit, test_fraction=test_fraction,
                        seed=seed, image_root=image_root, check_images=check_images,
                        allow_outside=allow_outside, loader="jsonl", per_answer=per_answer)
