"""Loaders for the paper's six data sets, read through ``datasets.load_dataset`` with their real schemas.

``path`` is the hub id or a local folder; a local folder with the hub's layout (parquet shards and the README's
``configs``), a folder of parquet files named by split, or a ``Dataset(Dict).save_to_disk`` folder all load
through the same code, which is how the tests exercise every converter offline.

=============  ===========================  =========================  ===============================================
name           hub id                       default splits             columns read; answer convention
=============  ===========================  =========================  ===============================================
realworldqa    xai-org/RealworldQA          test -> partitioned        image, question, answer (a letter when the
                                                                       question lists "A. ..." options, else text)
mmstar         Lin-Chen/MMStar              val -> partitioned         index, question ("...\\nOptions: A: x, B: y"),
                                                                       image, answer (letter), category, l2_category
scienceqa      derek-thomas/ScienceQA       train / test               image (None -> skipped), question, choices,
                                                                       answer (int index -> letter), hint
vqa_rad        flaviagiammarino/vqa-rad     train / test               image, question, answer
textvqa        lmms-lab/textvqa             train / validation         image, question, answers (10 annotators:
                                                                       most common first), question_id
docvqa         lmms-lab/DocVQA (DocVQA)     train / validation         image, question, answers, questionId
=============  ===========================  =========================  ===============================================

When ``train_split == test_split`` (RealWorldQA and MMStar ship one split) the split is partitioned by a seeded
permutation: ``test_fraction`` of it is the test set and the rest the train set, with no overlap. ``limit`` draws
that many rows of each split (kept in their order). Both draws come from ``seed`` (a recipe's seed unless pinned).
Rows without an image or without a reference answer are skipped.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from mmguard.core.constants import LETTERS
from mmguard.core.errors import UserError
from mmguard.core.registry import DATASETS
from mmguard.data.errors import Origin
from mmguard.data.loaders import Limit, Splits, TestFraction
from mmguard.data.sample import Sample

Row = Dict[str, Any]
Converter = Callable[[Row, int, str], Optional[Sample]]


class HubDataError(UserError):
    """A hub data set (or its local copy) that cannot be loaded or lacks a column; names path, split and field."""


@dataclasses.dataclass(frozen=True)
class HubSpec:
    name: str
    path: str
    train_split: str
    test_split: str
    columns: Tuple[str, ...]
    convert: Converter
    config: Optional[str] = None
    doc: str = ""


# ---------------------------------------------------------------------------------------------------------------
# loading

def _readme_declares(folder: Path, config: str) -> bool:
    readme = folder / "README.md"
    return readme.is_file() and re.search(rf"config_name:\s*['\"]?{re.escape(config)}['\"]?\s*$",
                                          readme.read_text(encoding="utf-8", errors="replace"), re.M) is not None


def load_hf_split(path: str, split: str, *, config: Optional[str] = None, cache_dir: Optional[str] = None,
                  dataset: str = "dataset"):
    """One split as a ``datasets.Dataset``: hub id, hub-layout folder, parquet folder or ``save_to_disk`` folder."""
    import datasets

    local = Path(str(path)).expanduser()
    where = f"dataset '{dataset}': {str(path)!r} split {split!r}" + (f" config {config!r}" if config else "")
    try:
        if local.is_dir():
            if (local / "dataset_dict.json").is_file():
                dd = datasets.load_from_disk(str(local))
                if split not in dd:
                    raise HubDataError(f"{where}: no such split; the folder has {sorted(dd)}")
                return dd[split]
            if (local / "state.json").is_file():  # a single saved Dataset serves any split name
                return datasets.load_from_disk(str(local))
            name = config if config and _readme_declares(local, config) else None
            data_dir = config if config and name is None and (local / config).is_dir() else None
            return datasets.load_dataset(str(local), name=name, data_dir=data_dir, split=split, cache_dir=cache_dir)
        return datasets.load_dataset(str(path), name=config, split=split, cache_dir=cache_dir)
    except HubDataError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised with the data set, path and split named
        hint = "" if local.exists() else " (no network? download it once, or pass path=LOCAL_FOLDER)"
        raise HubDataError(f"{where}: could not load: {type(err).__name__}: {err}{hint}") from err


def _as_pil(value: Any, where: str) -> Optional[Image.Image]:
    if value is None or isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        try:
            im = Image.open(io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"])
            im.load()
        except MemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ... for a broken image
            raise HubDataError(f"{where}: field 'image': not a readable image: {type(err).__name__}: {err}") from None
        return im
    raise HubDataError(f"{where}: field 'image': expected an image, got {type(value).__name__}")


def _row(ds, i: int, where: str) -> Row:
    try:
        return ds[i]
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets decodes the image column while reading the row
        raise HubDataError(f"{where}: cannot be read (a broken image?): {type(err).__name__}: {err}") from None


def _check_columns(ds, spec: HubSpec, path: str, split: str) -> None:
    missing = [c for c in spec.columns if c not in ds.column_names]
    if missing:
        raise HubDataError(f"dataset '{spec.name}': {str(path)!r} split {split!r}: missing field(s) "
                           f"{', '.join(repr(m) for m in missing)}; its columns are {ds.column_names}")


def _convert(ds, indices: Sequence[int], spec: HubSpec, split: str, limit: Optional[int],
             path: str, seed: int, stream: int) -> List[Sample]:
    """The samples of rows ``indices``; with ``limit``, the first ``limit`` usable rows of a permutation drawn
    from (``seed``, ``stream``), returned in row order."""
    out: List[Tuple[int, Sample]] = []
    if limit is not None and int(limit) <= 0:
        return []
    order = list(indices)
    if limit is not None and int(limit) < len(order):
        order = [order[k] for k in np.random.default_rng([int(seed), stream]).permutation(len(order))]
    for i in order:
        where = f"dataset '{spec.name}': {str(path)!r} split {split!r} row {int(i)}"
        row = _row(ds, int(i), where)
        row["image"] = _as_pil(row.get("image"), where)
        try:
            sample = spec.convert(row, int(i), split)
        except (KeyError, TypeError, ValueError) as err:
            raise HubDataError(f"{where}: {err}") from err
        if sample is None:
            continue
        sample.origin = Origin(f"dataset '{spec.name}': {str(path)!r}", f"split {split!r} row {int(i)}", sample.id)
        out.append((int(i), sample))
        if limit is not None and len(out) >= int(limit):
            break
    return [sample for _, sample in sorted(out, key=lambda pair: pair[0])]


def load_hub(spec: HubSpec, *, path: Optional[str] = None, train_split: Optional[str] = None,
             test_split: Optional[str] = None, limit: Optional[int] = None, config: Optional[str] = "default",
             test_fraction: float = 0.5, seed: int = 0, cache_dir: Optional[str] = None) -> Splits:
    path = str(path or spec.path)
    train_split = train_split or spec.train_split
    test_split = test_split or spec.test_split
    config = spec.config if config == "default" else config
    train_ds = load_hf_split(path, train_split, config=config, cache_dir=cache_dir, dataset=spec.name)
    _check_columns(train_ds, spec, path, train_split)
    if test_split == train_split:
        if not 0.0 < test_fraction < 1.0:
            raise HubDataError(f"dataset '{spec.name}': train and test both read split {train_split!r}, so "
                               f"test_fraction must lie strictly between 0 and 1 (got {test_fraction})")
        order = np.random.default_rng(int(seed)).permutation(len(train_ds))
        n_test = int(round(len(train_ds) * test_fraction))
        test_ds, test_idx, train_idx = train_ds, sorted(order[:n_test].tolist()), sorted(order[n_test:].tolist())
    else:
        test_ds = load_hf_split(path, test_split, config=config, cache_dir=cache_dir, dataset=spec.name)
        _check_columns(test_ds, spec, path, test_split)
        train_idx, test_idx = range(len(train_ds)), range(len(test_ds))
    return {"train": _convert(train_ds, train_idx, spec, train_split, limit, path, seed, 0),
            "test": _convert(test_ds, test_idx, spec, test_split, limit, path, seed, 1)}


# ---------------------------------------------------------------------------------------------------------------
# option parsing

_LINE_OPTION = re.compile(r"^\s*\(?([A-J])[.):]\s*(.*\S)\s*$")


def parse_line_options(question: str) -> Tuple[str, Optional[List[str]]]:
    """Options written one per line (``A. Left``), as RealWorldQA does: (stem, options) or (question, None).

    Lines after the options that speak of the answer letter (the answer-format instruction) are dropped; other
    trailing lines stay in the stem.
    """
    lines = question.split("\n")
    for start, line in enumerate(lines):
        m = _LINE_OPTION.match(line)
        if m and m.group(1) == "A":
            break
    else:
        return question, None
    options, end = [], start
    while end < len(lines):
        m = _LINE_OPTION.match(lines[end])
        if not m or m.group(1) != LETTERS[len(options)]:
            break
        options.append(m.group(2).strip())
        end += 1
    if len(options) < 2:
        return question, None
    tail = [ln for ln in lines[end:] if ln.strip() and not re.search(r"\bletter\b|\boption", ln, re.I)]
    stem = "\n".join([*lines[:start], *tail]).strip()
    return stem, options


def parse_inline_options(question: str, marker: str = "Options:") -> Tuple[str, Optional[List[str]]]:
    """Options written inline after a marker (``...\\nOptions: A: x, B: y, C: z``), as MMStar does."""
    if marker not in question:
        return question, None
    stem, text = question.rsplit(marker, 1)
    spans: List[Tuple[int, int]] = []
    pos = 0
    for letter in LETTERS:
        m = re.compile(rf"(?:^|(?<=[\s,;])){letter}\s*[:.]\s*").search(text, pos)
        if m is None or (letter == "A" and text[: m.start()].strip()):
            break
        spans.append((m.start(), m.end()))
        pos = m.end()
    if len(spans) < 2:
        return question, None
    options = []
    for k, (_, end) in enumerate(spans):
        stop = spans[k + 1][0] if k + 1 < len(spans) else len(text)
        options.append(text[end:stop].strip().rstrip(",;").strip())
    return stem.strip(), options


def _letter_answer(answer: Any, n: int) -> Optional[str]:
    a = str(answer).strip().strip("().").upper()
    return a if len(a) == 1 and a in LETTERS[:n] else None


# ---------------------------------------------------------------------------------------------------------------
# converters: one per data set, (row, row index, split) -> Sample or None (skip)

def _realworldqa(row: Row, i: int, split: str) -> Optional[Sample]:
    if row["image"] is None:
        return None
    question, answer = str(row["question"]), str(row["answer"]).strip()
    stem, options = parse_line_options(question)
    letter = _letter_answer(answer, len(options)) if options else None
    meta = {"source": "realworldqa", "raw_question": question}
    if options and letter:
        return Sample(f"realworldqa-{i:05d}", row["image"], stem, letter, choices=options, meta=meta)
    return Sample(f"realworldqa-{i:05d}", row["image"], question, answer, meta=meta)


def _mmstar(row: Row, i: int, split: str) -> Optional[Sample]:
    if row["image"] is None:
        return None
    question, answer = str(row["question"]), str(row["answer"]).strip()
    stem, options = parse_inline_options(question)
    letter = _letter_answer(answer, len(options)) if options else None
    meta = {"source": "mmstar", "category": row.get("category"), "l2_category": row.get("l2_category"),
            "meta_info": row.get("meta_info"), "raw_question": question}
    sid = f"mmstar-{row['index']}"
    if options and letter:
        return Sample(sid, row["image"], stem, letter, choices=options, meta=meta)
    return Sample(sid, row["image"], question, answer, meta=meta)


def _scienceqa(row: Row, i: int, split: str) -> Optional[Sample]:
    if row["image"] is None:  # about half of ScienceQA is text-only
        return None
    choices = [str(c) for c in row["choices"]]
    index = int(row["answer"])
    if not 0 <= index < len(choices):
        raise ValueError(f"field 'answer': index {index} outside the {len(choices)} choices")
    hint = (row.get("hint") or "").strip()
    question = f"Context: {hint}\n{row['question']}" if hint else str(row["question"])
    meta = {"source": "scienceqa", "hint": hint, **{k: row.get(k) for k in
                                                     ("subject", "topic", "category", "skill", "grade", "task")}}
    return Sample(f"scienceqa-{split}-{i:05d}", row["image"], question, LETTERS[index], choices=choices, meta=meta)


def _vqa_rad(row: Row, i: int, split: str) -> Optional[Sample]:
    if row["image"] is None:
        return None
    answer = str(row["answer"]).strip()
    closed = answer.lower() in ("yes", "no")
    return Sample(f"vqa_rad-{split}-{i:05d}", row["image"], str(row["question"]), answer,
                  meta={"source": "vqa_rad", "answer_type": "closed" if closed else "open"})


def _ranked_answers(answers: Any) -> List[str]:
    """Distinct answers, most frequent first (ties keep annotator order)."""
    counts = collections.Counter(str(a).strip() for a in (answers or []) if a is not None and str(a).strip())
    return [a for a, _ in counts.most_common()]


def _textvqa(row: Row, i: int, split: str) -> Optional[Sample]:
    ranked = _ranked_answers(row["answers"])
    if row["image"] is None or not ranked:  # the test split has no answers
        return None
    counts = dict(collections.Counter(str(a).strip() for a in row["answers"]))
    return Sample(f"textvqa-{row['question_id']}", row["image"], str(row["question"]), ranked[0], ranked[1:],
                  meta={"source": "textvqa", "image_id": row.get("image_id"), "answer_counts": counts})


def _docvqa(row: Row, i: int, split: str) -> Optional[Sample]:
    answers = [str(a).strip() for a in (row["answers"] or []) if a is not None and str(a).strip()]
    if row["image"] is None or not answers:  # the test split has no answers
        return None
    return Sample(f"docvqa-{row['questionId']}", row["image"], str(row["question"]), answers[0], answers[1:],
                  meta={"source": "docvqa", "docId": row.get("docId"), "question_types": row.get("question_types")})


HUB_SPECS: Dict[str, HubSpec] = {s.name: s for s in (
    HubSpec("realworldqa", "xai-org/RealworldQA", "test", "test", ("image", "question", "answer"), _realworldqa),
    HubSpec("mmstar", "Lin-Chen/MMStar", "val", "val", ("index", "image", "question", "answer"), _mmstar),
    HubSpec("scienceqa", "derek-thomas/ScienceQA", "train", "test",
            ("image", "question", "choices", "answer", "hint"), _scienceqa),
    HubSpec("vqa_rad", "flaviagiammarino/vqa-rad", "train", "test", ("image", "question", "answer"), _vqa_rad),
    HubSpec("textvqa", "lmms-lab/textvqa", "train", "validation",
            ("image", "question", "answers", "question_id"), _textvqa),
    HubSpec("docvqa", "lmms-lab/DocVQA", "train", "validation", ("image", "question", "answers", "questionId"),
            _docvqa, config="DocVQA"),
)}


def _make_loader(spec: HubSpec) -> Callable[..., Splits]:
    def load(path: Optional[str] = None, train_split: Optional[str] = None, test_split: Optional[str] = None,
             limit: Limit = None, config: Optional[str] = "default", test_fraction: TestFraction = 0.5,
             seed: int = 0, cache_dir: Optional[str] = None) -> Splits:
        return load_hub(spec, path=path, train_split=train_split, test_split=test_split, limit=limit,
                        config=config, test_fraction=test_fraction, seed=seed, cache_dir=cache_dir)

    load.__name__ = f"load_{spec.name}"
    load.__qualname__ = load.__name__
    load.__doc__ = (f"{spec.name}: ``{spec.path}`` (default splits {spec.train_split!r} / {spec.test_split!r}"
                    f"{', config ' + repr(spec.config) if spec.config else ''}); see :mod:`mmguard.data.hub`.\n\n"
                    "``config='default'`` keeps the data set's own config name; ``None`` asks for none. "
                    "``cache_dir`` is handed to ``datasets.load_dataset``.")
    return load


for _spec in HUB_SPECS.values():
    DATASETS.register(_spec.name, kind="hub", hub_id=_spec.path, columns=_spec.columns)(_make_loader(_spec))
