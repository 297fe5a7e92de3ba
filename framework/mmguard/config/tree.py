"""Writing a spec back as a recipe mapping (``--print-config``, a run's ``recipe.yaml``, run and release
hashes): every default written out, so that resolving it again gives the same spec; and a recipe with a seed axis
resolved again at one of its seeds (``at_seed``)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from mmguard.config.sections import LOOP_SECTIONS, attack_sections
from mmguard.config.spec import AttackSpec, ProbeSpec, RunSpec, VictimSpec, resolve


def at_seed(spec: RunSpec, seed: int) -> RunSpec:
    """The recipe at one seed of its ``seeds`` axis, resolved again from what the recipe said (so model, attack and
    data seeds that it left to the recipe seed follow it, and pinned ones stay)."""
    tree = {k: v for k, v in (spec.source or to_tree(spec)).items() if k != "seeds"}
    return resolve({**tree, "seed": seed})


def to_tree(spec: RunSpec) -> Dict[str, Any]:
    """The spec as a recipe mapping (every default written out); ``resolve(to_tree(s)) == s``. A recipe with a
    seed axis is written as it was given (its seeds resolve each seed's tree again)."""
    if spec.seeds:
        return {**spec.source, "seed": spec.seed, "seeds": spec.seeds}
    return {
        "name": spec.name, "seed": spec.seed, "out": spec.out,
        "data": {"name": spec.data.name, **spec.data.params, **spec.data.checks},
        "victims": [victim_tree(v) for v in spec.victims],
        "attacks": [attack_tree(a) for a in spec.attacks],
        "probes": [probe_tree(p) for p in spec.probes],
        "eval": dataclasses.asdict(spec.eval), "trainer": dataclasses.asdict(spec.trainer),
        "logger": dataclasses.asdict(spec.logger),
    }


def probe_tree(p: ProbeSpec) -> Dict[str, Any]:
    return {"name": p.name, "label": p.label, **p.params}


def victim_tree(v: VictimSpec) -> Dict[str, Any]:
    model = dataclasses.asdict(v.model)
    return {"name": v.name, "label": v.label, "model": model.pop("name"), **model, **v.params,
            **dataclasses.asdict(v.finetune), "probes": v.probes}


def attack_tree(a: AttackSpec) -> Dict[str, Any]:
    sections = attack_sections(a.attack_class)
    loop = {k: v for k, v in dataclasses.asdict(a.loop).items() if LOOP_SECTIONS[k] in sections}
    if "eot" in loop:
        loop["eot"] = [probe_tree(p) for p in a.eot]
    return {"name": a.name, "label": a.label, "surrogates": [dataclasses.asdict(s) for s in a.surrogates],
            "weights": a.weights, "seed": a.seed, **loop, **a.params}
