"""What a table's seeds vary: one recipe resolved at two of its seeds, compared component by component.

A recipe's seed drives what the recipe leaves open (``config/spec.py``): the data draw, a model's initialization
(or which pre-trained twin), the attack's draws; a victim's LoRA initialization, batch order and probe draws always
follow it. What differs between the two resolutions follows the seed; what is equal is pinned. ``seed_note`` says so
beside the tables that report a mean over seeds.
"""
from __future__ import annotations

from typing import List

from mmguard.config.spec import ModelSpec, RunSpec
from mmguard.core.model_names import is_tiny
from mmguard.core.registry import DATASETS, PROBES


def data_draws(data) -> bool:
    """Whether the data set draws anything with its seed: a generated set, a ``limit`` subsample, or a
    ``test_fraction`` split of one file or of a hub data set's single split."""
    p, kind = data.params, DATASETS.meta(data.name).get("kind")
    if kind == "generated" or p.get("limit") is not None:
        return True
    if kind == "hub":
        from mmguard.data.hub import HUB_SPECS

        hub = HUB_SPECS[data.name]
        return (p.get("train_split") or hub.train_split) == (p.get("test_split") or hub.test_split)
    return bool(p.get("test_fraction")) and p.get("test") is None


def _draws(name: str, params) -> bool:
    """Whether a probe draws anything from the seed (random stages, UEraser's copies, mix's choice of samples,
    early_stop's held-out split)."""
    if name == "none":
        return False
    cls = PROBES.get(name)
    stages = [q if isinstance(q, str) else q.get("name") for q in params.get("probes") or []]  # a combo's
    return cls.stochastic or cls.in_training_step or cls.seeded or any(_draws(q, {}) for q in stages)


def _start(m: ModelSpec) -> str:
    if m.pretrained and not is_tiny(m.name):
        return f"{m.name}'s pre-trained weights"
    return f"{m.name}'s {'pre-trained twin' if m.pretrained else 'initialization'} (seed {m.seed})"


def seed_note(a: RunSpec, b: RunSpec) -> str:
    """What the seeds of ``a`` and ``b`` (one recipe at two seeds) vary, and what they leave fixed."""
    varied: List[str] = []
    fixed: List[str] = []
    if not data_draws(a.data):
        fixed.append("the data (files, nothing drawn)")
    elif a.data.params.get("seed") != b.data.params.get("seed"):
        varied.append("the data draw")
    else:
        fixed.append(f"the data (seed {a.data.params.get('seed')})")
    models = [(x.model, y.model) for x, y in zip(a.victims, b.victims)]
    models += [(x, y) for p, q in zip(a.attacks, b.attacks) for x, y in zip(p.surrogates, q.surrogates)]
    moving = [x for x, y in models if x.seed != y.seed and not (x.pretrained and not is_tiny(x.name))]
    for pretrained, what in ((False, "the initialization of "), (True, "the pre-trained twin of ")):
        names = list(dict.fromkeys(x.name for x in moving if x.pretrained == pretrained))
        if names:
            varied.append(what + _join(names))
    fixed += list(dict.fromkeys(_start(x) for x, y in models if x not in moving))
    if any(x.seed != y.seed for x, y in zip(a.attacks, b.attacks)):
        varied.append("the attacks' draws")
    elif a.attacks:
        fixed.append(f"the attacks' draws (seed {a.attacks[0].seed})")
    training = ["batch order"]
    if any("rank" in v.params for v in a.victims):
        training.append("LoRA initialization")
    if any(_draws(p.name, p.params) for p in a.probes):
        training.append("random probe draws")
    varied.append("the fine-tunes' " + _join(training))
    return f"Seeds vary {'; '.join(varied)}." + (f" Fixed: {'; '.join(fixed)}." if fixed else "")


def _join(items: List[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
