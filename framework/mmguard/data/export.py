"""Write samples as data sets that fine-tuning tools read: LLaVA JSON (DESIGN.md) and ShareGPT.

Images are written losslessly as ``images/<id>.png`` (8-bit RGB, the exact pixels of ``Sample.pixels()``), so
a protected perturbation survives the round trip bit for bit. The human turn carries ``<image>\\n`` and the
question as the model reads it (:attr:`Sample.prompt_question`: options appended for multiple choice), so an
outside trainer sees the options; the loaders strip both again. ``answers`` (aliases), ``choices`` and ``meta``
(its JSON-serialisable part) are written beside the conversation.

Every file is written atomically: to a temporary file in the same folder, then ``os.replace``; a crash leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from PIL import Image

from mmguard.data.sample import Sample
from mmguard.core.io import atomic_write, atomic_write_json

PathLike = Union[str, Path]
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_NAME_BYTES = 255  # a file name's limit on every common file system


def write_json_atomic(path: PathLike, data: Any, indent: int = 1) -> Path:
    return atomic_write_json(path, data, indent=indent)


def image_filename(sample_id: str) -> str:
    """``images/<id>.png`` with characters outside ``[A-Za-z0-9._-]`` replaced (ids may contain slashes)."""
    safe = _SAFE.sub("_", str(sample_id)).lstrip(".") or "_"
    return f"{safe}.png"


def check_export_names(samples: Sequence[Sample]) -> None:
    """Refuse ids that would overwrite each other's image on export: equal ids, and ids whose file names differ
    only in case (clusters mount case-insensitive file systems too) or in the characters ``image_filename``
    replaces; and ids too long for a file name."""
    seen: Dict[str, Sample] = {}
    for s in samples:
        name = image_filename(s.id)
        if len(name) > MAX_NAME_BYTES:
            raise s.error("id", f"id is too long to name its exported image ({len(name)} characters; at most "
                                f"{MAX_NAME_BYTES - 4})")
        other = seen.get(name.lower())
        if other is None:
            seen[name.lower()] = s
            continue
        if other.id == s.id:
            raise s.error("id", f"duplicate sample id {s.id!r} (also {_where(other)})")
        raise s.error("id", f"id {s.id!r} and id {other.id!r} ({_where(other)}) would both be exported as "
                            f"{name!r} (file names compare case-insensitively); rename one")


def _where(sample: Sample) -> str:
    o = sample.origin
    if o is None or o.entry is None:
        return "another sample"
    return o.entry if isinstance(o.entry, str) else f"entry {o.entry}"


def write_png_atomic(image: Image.Image, path: PathLike) -> Path:
    with atomic_write(path, "wb") as fh:
        image.save(fh, format="PNG")
    return Path(path)


def _json_safe(meta: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for key, value in (meta or {}).items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out


def _extras(s: Sample) -> Dict[str, Any]:
    extra: Dict[str, Any] = {"answers": list(s.aliases), "choices": list(s.choices) if s.choices else None}
    meta = _json_safe(s.meta)
    if meta:
        extra["meta"] = meta
    return extra


def llava_entry(s: Sample, rel: str) -> Dict[str, Any]:
    return {"id": s.id, "image": rel,
            "conversations": [{"from": "human", "value": f"<image>\n{s.prompt_question}"},
                              {"from": "gpt", "value": s.answer}], **_extras(s)}


def sharegpt_entry(s: Sample, rel: str) -> Dict[str, Any]:
    return {"id": s.id, "messages": [{"role": "user", "content": f"<image>{s.prompt_question}"},
                                     {"role": "assistant", "content": s.answer}],
            "images": [rel], **_extras(s)}


class DatasetWriter:
    """Writes a data set one sample at a time (each image as soon as it is made, nothing decoded kept), then its
    LLaVA JSON and/or ShareGPT files at ``close``; ids are checked for colliding file names first."""

    def __init__(self, out_dir: PathLike, llava: Optional[str] = "data.json", sharegpt: Optional[str] = None,
                 dataset_info: bool = True):
        self.out_dir, self.llava, self.sharegpt, self.dataset_info = Path(out_dir), llava, sharegpt, dataset_info
        self.llava_entries: List[Dict[str, Any]] = []
        self.sharegpt_entries: List[Dict[str, Any]] = []

    def add(self, sample: Sample) -> Path:
        """Write the sample's image; returns its path."""
        rel = f"images/{image_filename(sample.id)}"
        path = write_png_atomic(sample.pil, self.out_dir / rel)
        if self.llava:
            self.llava_entries.append(llava_entry(sample, rel))
        if self.sharegpt:
            self.sharegpt_entries.append(sharegpt_entry(sample, rel))
        return path

    def close(self) -> Path:
        if self.sharegpt:
            write_json_atomic(self.out_dir / self.sharegpt, self.sharegpt_entries)
            if self.dataset_info:
                write_json_atomic(self.out_dir / "dataset_info.json", {Path(self.sharegpt).stem: {
                    "file_name": self.sharegpt, "formatting": "sharegpt",
                    "columns": {"messages": "messages", "images": "images"},
                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant"}}})
        if self.llava:
            return write_json_atomic(self.out_dir / self.llava, self.llava_entries)
        return self.out_dir / self.sharegpt


def export_llava_json(samples: Sequence[Sample], out_dir: PathLike, name: str = "data.json") -> Path:
    """Write ``out_dir/name`` (DESIGN.md's LLaVA JSON) and ``out_dir/images/<id>.png``; returns the JSON path."""
    check_export_names(samples)  # before the first file is written
    writer = DatasetWriter(out_dir, llava=name)
    for s in samples:
        writer.add(s)
    return writer.close()


def export_sharegpt(samples: Sequence[Sample], out_dir: PathLike, name: str = "data.json",
                    dataset_info: bool = True) -> Path:
    """Write ShareGPT in LLaMA-Factory's multimodal layout (``messages`` with ``role``/``content``, ``images``)
    and, with ``dataset_info``, the ``dataset_info.json`` that registers it there; returns the JSON path."""
    check_export_names(samples)
    writer = DatasetWriter(out_dir, llava=None, sharegpt=name, dataset_info=dataset_info)
    for s in samples:
        writer.add(s)
    return writer.close()
