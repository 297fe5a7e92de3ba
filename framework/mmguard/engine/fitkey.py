"""What a fine-tune computes, as a hash: two fits with the same key are the same computation.

A fit is fixed by the victim, the seed, the evaluation and the training set as the probe leaves it. A probe whose
once-applied part leaves a set as it was (``mix`` of the clean set with itself, ``question_strip`` and ``onion``
on questions without a trigger, ``whitespace`` on tidy text) and that has nothing left to do during training (no
stage re-drawn per epoch, no training-step augmentation) fine-tunes on exactly the samples of another probe
(``none``; ``blur`` for ``blur_whitespace``), with the same seed: the same weights and the same predictions. The
runner reads such a row back instead of fitting again (``Runner.read_back``), which a probe axis of mixes and
text scrubbers would otherwise pay for once per probe. The probe's plan that the key is made from is the one the
fit then trains on, so a probe is applied once either way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from mmguard.config.spec import ProbeSpec, RunSpec, VictimSpec
from mmguard.config.tree import victim_tree
from mmguard.core.params import declared
from mmguard.data.sample import Sample
from mmguard.engine.build import build_probe
from mmguard.engine.protect import spec_hash
from mmguard.probes.base import ProbePlan


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


def probe_plan(spec: RunSpec, probe: ProbeSpec, train: Sequence[Sample],
               clean: Optional[Sequence[Sample]]) -> Optional[ProbePlan]:
    """The plan a fine-tune on ``train`` through ``probe`` runs (``clean``: the clean set, for mix); None for
    ``none``."""
    if probe.name == "none":
        return None
    return build_probe(probe).plan(list(train), None if clean is None else list(clean), spec.seed)


def fit_hash(spec: RunSpec, victim: VictimSpec, train: Sequence[Sample], plan: Optional[ProbePlan]) -> Optional[str]:
    """The key of victim ``victim``'s fine-tune on ``train`` through ``plan`` (then evaluated as ``spec`` says), or
    None when the fit is its own: the plan re-draws random stages every epoch, or augments in the training step
    (ueraser). A fit-level probe (early_stop, isolate) and its validation split are part of the key."""
    if plan is not None and (plan.dynamic or plan.step is not None):
        return None
    samples = plan.samples if plan is not None else train
    key = {"data": {"name": spec.data.name, **spec.data.params}, "seed": spec.seed, "eval": spec.eval.key(),
           "victim": victim_tree(victim), "train": samples_digest(samples)}
    if plan is not None and plan.fit is not None:
        key["fit"] = {"name": plan.fit.name, **{k: getattr(plan.fit, k) for k in declared(type(plan.fit))}}
        key["val"] = samples_digest(plan.val or [])
    return spec_hash(key)


def find_fit(fit: Optional[str], runs: Sequence[Tuple[Path, List[Dict]]]) -> Optional[Tuple[Dict, Path]]:
    """The first finished row of fit ``fit`` among ``runs`` ((run folder, its rows) pairs), with its folder; None
    when there is none or the fit is its own (``fit`` None)."""
    if fit is None:
        return None
    for folder, rows in runs:
        for r in rows:
            if r.get("fit_hash") == fit and r.get("accuracy") is not None:
                return r, folder
    return None


def run_rows(folder: Path) -> List[Dict]:
    """The rows of run folder ``folder`` (none when it is not one, e.g. a folder of releases)."""
    path = Path(folder) / "results.json"
    try:
        return list(json.loads(path.read_text()).get("rows") or []) if path.is_file() else []
    except (OSError, ValueError):
        return []
