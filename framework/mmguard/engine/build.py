"""From spec to objects: the one place that turns a resolved spec into a component, as timm's ``create_model``
and torchtune's ``instantiate`` do. Nothing else calls a registry's ``build`` (``tests/test_builder.py``).

Each builder takes what ``config/spec.py`` resolved (``AttackSpec``, ``ProbeSpec``, ``VictimSpec``, ``DataSpec``,
``ModelSpec``). The probe builder also takes a probe as a combo lists its parts (a name, or a ``{name: ..., **params}``
mapping, checked against the probe's declaration), and builds a combo's parts before the combo (``Probe.nests``);
the attack, victim and data builders also take a name with its parameters, for the fixed choices of benchmarks and
commands.
A model is its family's adapter at its initial weights (``models/zoo.py``), then, for a tiny model, its pre-trained
twin (``engine/pretrain.py``: trained on first use, or only read from the cache), then its device.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from mmguard.attacks.base import Attack
from mmguard.config.spec import AttackSpec, DataSpec, ModelSpec, ProbeSpec, VictimSpec
from mmguard.core.model_names import is_tiny
from mmguard.core.registry import ATTACKS, DATASETS, PROBES, VICTIMS
from mmguard.data.sample import Sample
from mmguard.engine.pretrain import load_or_pretrain
from mmguard.models import zoo
from mmguard.probes.base import Probe, nested_spec
from mmguard.victims.base import Victim


def build_attack(spec: Union[AttackSpec, str], **params: Any) -> Attack:
    """An attack's objective with its parameters (the loop's settings stay in ``spec.loop``), or an attack by name
    with its parameters."""
    if isinstance(spec, AttackSpec):
        return ATTACKS.build(spec.name, **spec.params)
    return ATTACKS.build(spec, **params)


def build_probe(spec: Union[ProbeSpec, str, Dict[str, Any], Probe]) -> Optional[Probe]:
    """A probe from its spec (None for ``none``: the data as released), or from a combo's part (a name or a
    mapping; a probe already built is returned as it is). A combo's parts are built first."""
    if isinstance(spec, Probe):
        return spec
    if isinstance(spec, ProbeSpec):
        if spec.name == "none":
            return None
        name, params = spec.name, dict(spec.params)
    else:
        name, params = nested_spec(spec)
    nests = PROBES.get(name).nests
    if nests:
        params[nests] = [build_probe(p) for p in params[nests]]
    return PROBES.build(name, **params)


def build_victim(spec: Union[VictimSpec, str], **params: Any) -> Victim:
    """What trains in a fine-tune: a victim spec's recipe, or a victim by name with its parameters."""
    if isinstance(spec, VictimSpec):
        return VICTIMS.build(spec.name, **spec.params)
    return VICTIMS.build(spec, **params)


def build_data(spec: Union[DataSpec, str], **params: Any) -> Dict[str, List[Sample]]:
    """A data set's splits as its loader gives them (``engine/preflight.py: load_data`` also checks them)."""
    if isinstance(spec, DataSpec):
        return DATASETS.build(spec.name, **spec.params)
    return DATASETS.build(spec, **params)


def build_model(spec: ModelSpec, *, progress: bool = True, train: bool = True, **overrides: Any):
    """The adapter of a model spec: a tiny model's pre-trained twin (trained and cached on first use; ``train``
    false: only read from the cache, a UserError when it is not there), a registered pre-trained model, or a
    checkpoint; on ``spec.device`` when given. ``overrides``: a tiny model's config (benchmarks' sizes)."""
    adapter = zoo.build_model(spec.name, seed=spec.seed, pretrained=spec.pretrained,
                              trust_remote_code=spec.trust_remote_code, dtype=spec.dtype, **overrides)
    if is_tiny(spec.name) and spec.pretrained:
        load_or_pretrain(adapter, seed=spec.seed, progress=progress, train=train)
    if spec.device is not None:
        adapter.model.to(spec.device)
    return adapter
