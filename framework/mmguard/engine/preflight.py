"""Checks that run before any work: the output folder, every image of every split, and every surrogate against
its attack. A run that passes them does not fail later on input a user could have fixed."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

from mmguard.config.spec import DataSpec, RunSpec
from mmguard.core.errors import UserError
from mmguard.data.checks import check_splits
from mmguard.data.sample import Sample
from mmguard.engine.build import build_attack, build_data
from mmguard.models.zoo import count_language_layers


def check_writable(out: Path) -> None:
    """``out`` can be created and written to (checked without creating anything)."""
    out = Path(out)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"output folder '{out}' cannot be made: '{probe}' is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"output folder '{out}' cannot be written ('{probe}' is not writable)")


def load_data(spec: DataSpec, need=("train", "test")) -> Dict[str, List[Sample]]:
    """The data set's splits, every image checked (decoded, size bounds, ids, answers) before any work."""
    data = build_data(spec)
    for split in need:
        if not data.get(split):
            raise UserError(f"dataset '{spec.name}' gave no '{split}' samples (data.{split})")
    check_splits(data, **spec.checks)
    return data


def check_models(spec: RunSpec) -> None:
    """Every registered pre-trained model the run names has its weights (e.g. an alignment made by a command)."""
    from mmguard.core.registry import MODELS

    named = [(f"victims.{i}", v.model) for i, v in enumerate(spec.victims)]
    named += [(f"attacks.{i}.surrogates.{j}", s) for i, a in enumerate(spec.attacks)
              for j, s in enumerate(a.surrogates)]
    for key, m in named:
        missing = MODELS.meta(m.name).get("missing") if m.name in MODELS and m.pretrained else None
        problem = missing() if missing else None
        if problem:
            raise UserError(f"key '{key}' ({m.name}): {problem}")


def check_surrogates(spec: RunSpec) -> None:
    """Every attack can run on its surrogates (e.g. |K| within their language-model layers)."""
    for i, a in enumerate(spec.attacks):
        attack = build_attack(a)
        for j, s in enumerate(a.surrogates):
            problem = attack.check_surrogate(s.name, count_language_layers(s.name, s.trust_remote_code))
            if problem:
                raise UserError(f"key 'attacks.{i}.surrogates.{j}' ({s.name}): {problem}")
