"""What a clean fine-tune computes, as a hash: two clean fits with the same key are the same computation.

A probe whose once-applied part leaves the clean training set as it was (``mix`` of the clean set with itself,
``question_strip`` and ``onion`` on questions without a trigger, ``whitespace`` on tidy text) and that has nothing
left to do during training (no stage re-drawn per epoch, no training-step augmentation) fine-tunes on exactly the
samples of the probe ``none``, with the same seed: the same weights and the same predictions. The runner reads
such a clean row back instead of fitting again (``Runner.read_back_clean``), which a probe axis of mixes and
text scrubbers would otherwise pay for once per probe.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from mmguard.config.spec import ProbeSpec, RunSpec, VictimSpec
from mmguard.config.tree import victim_tree
from mmguard.core.registry import PROBES
from mmguard.data.sample import Sample
from mmguard.engine.protect import spec_hash


def image_digest(image) -> str:
    """An in-memory image by its pixels; a file by its path, size and modification time (not decoded)."""
    if isinstance(image, Image.Image):
        h = hashlib.sha256(f"{image.mode}:{image.size}".encode())
        h.update(image.tobytes())
        return h.hexdigest()
    path = Path(image)
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def samples_digest(samples: Sequence[Sample]) -> str:
    """The training set as a fine-tune reads it, in order: ids, texts, answers, choices and images."""
    h = hashlib.sha256()
    for s in samples:
        h.update(repr((s.id, s.question, s.answer, s.aliases, s.choices)).encode())
        h.update(image_digest(s.image).encode())
    return h.hexdigest()


def clean_fit_hash(spec: RunSpec, victim: VictimSpec, probe: ProbeSpec, train: Sequence[Sample]) -> Optional[str]:
    """The key of victim ``victim``'s clean fine-tune through ``probe`` (then evaluated as ``spec`` says), or None
    when the fit is its own: the probe changes pixels (applying it to the whole set only to compare would double
    its cost on a large one), re-draws random stages every epoch, or augments in the training step (ueraser)."""
    samples = list(train)
    if probe.name != "none":
        cls = PROBES.get(probe.name)
        if cls.changes_image(probe.params) and not cls.set_level:
            return None
        plan = PROBES.build(probe.name, **probe.params).plan(samples, samples, spec.seed)
        if plan.dynamic or plan.step is not None:
            return None
        samples = plan.samples
    return spec_hash({"data": {"name": spec.data.name, **spec.data.params}, "seed": spec.seed,
                      "eval": vars(spec.eval), "victim": victim_tree(victim), "train": samples_digest(samples)})


def find_clean_fit(fit: Optional[str], runs: Sequence[Tuple[Path, List[Dict]]]) -> Optional[Tuple[Dict, Path]]:
    """The first finished clean row of fit ``fit`` among ``runs`` ((run folder, its rows) pairs), with its folder;
    None when there is none or the fit is its own (``fit`` None)."""
    if fit is None:
        return None
    for folder, rows in runs:
        for r in rows:
            if r.get("attack") == "clean" and r.get("fit_hash") == fit and r.get("accuracy") is not None:
                return r, folder
    return None


def run_rows(folder: Path) -> List[Dict]:
    """The rows of run folder ``folder`` (none when it is not one, e.g. a folder of releases)."""
    path = Path(folder) / "results.json"
    try:
        return list(json.loads(path.read_text()).get("rows") or []) if path.is_file() else []
    except (OSError, ValueError):
        return []
