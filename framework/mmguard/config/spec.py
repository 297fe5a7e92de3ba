"""The spec tree: a recipe resolved into typed specs, checked before any work.

``resolve(tree, source)`` turns a recipe's merged plain mapping (``config/recipe.py`` reads the YAML, includes,
overlays and overrides) into a ``RunSpec``. Every key is checked against what its component declares
(``core.params``: types, ranges, cross-field rules); defaults are filled in, fractions parsed, labels computed,
the fine-tuning-recipe axis expanded, default surrogates resolved and model names looked up -- once. ``config/tree.py``
writes a spec back as a recipe (``--print-config``, a run's ``recipe.yaml``); resolving that again gives the same
spec. The engine receives specs and never reads raw recipe keys.

A recipe entry is flat (``{name: mmguard_bph, R: 3, tau: 0.5, surrogates: [tiny-llava]}``); its keys are split
between the entry's own keys, the loop or fine-tuning settings (``config/sections.py``) and the component's own
parameters. ``each:`` (used by overlays such as ``recipes/debug.yaml``) sets keys on every entry of a list whose
component declares them, overriding the entries.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence

from mmguard.config.sections import (LOOP_SECTIONS, SECTION_TEXT, EvalParams, FinetuneParams, LoggerParams, LoopParams,
                                     TrainerParams, attack_sections)
from mmguard.config.values import coerce_list, label_at, list_at, mapping_at, unique_at, value_at
from mmguard.core.errors import UserError, located
from mmguard.core.model_names import resolve_model_name
from mmguard.core.params import NonNegativeInt, bind, declared
from mmguard.core.registry import ATTACKS, DATASETS, PROBES, VICTIMS, load_plugins


# ---------------------------------------------------------------------------------------------------- the tree
@dataclasses.dataclass
class ModelSpec:
    """A model as a recipe names it. ``name``: a registered tiny model, a checkpoint folder or a hub id.
    ``pretrained``: a tiny model's pre-trained twin (cached, trained on first use), a checkpoint's own weights
    (false: the checkpoint's architecture at random init). ``seed``: the random initialization (null: the
    recipe's seed). ``dtype``: the weights' dtype (null: float32 for tiny models, the checkpoint's own otherwise).
    ``device``: where this model lives (null: the trainer's device). ``trust_remote_code``: for checkpoints whose
    code lives in their repository."""

    name: str
    pretrained: bool = True
    seed: Optional[NonNegativeInt] = None
    dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None
    device: Optional[str] = None
    trust_remote_code: bool = False


@dataclasses.dataclass
class DataSpec:
    name: str
    params: Dict[str, Any]
    checks: Dict[str, Any]


@dataclasses.dataclass
class ProbeSpec:
    name: str                 # "none": train on the data as released
    label: str
    params: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class VictimSpec:
    name: str
    label: str
    model: ModelSpec
    params: Dict[str, Any]    # the victim recipe's own (rank, alpha, dropout for the LoRA family)
    finetune: FinetuneParams
    probes: Optional[List[str]] = None   # labels of the probes this victim runs (None: all)


@dataclasses.dataclass
class AttackSpec:
    name: str
    label: str
    surrogates: List[ModelSpec]
    weights: List[float]
    seed: int
    loop: LoopParams
    params: Dict[str, Any]    # the attack's objective parameters (its ``Params``)
    eot: List[ProbeSpec] = dataclasses.field(default_factory=list)

    @property
    def attack_class(self):
        return ATTACKS.get(self.name)


@dataclasses.dataclass
class RunSpec:
    name: str
    seed: int
    out: str
    data: DataSpec
    victims: List[VictimSpec]
    attacks: List[AttackSpec]
    probes: List[ProbeSpec]
    eval: EvalParams
    trainer: TrainerParams
    logger: LoggerParams
    # the seed axis: the whole recipe once per seed. The recipe's seed drives what the recipe leaves open: the
    # data draw (data.seed), a from-init model's initialization and which pre-trained twin (a model's seed), the
    # attack's draws (attacks[].seed); a victim's LoRA initialization, batch order and probe draws always follow it.
    seeds: Optional[List[int]] = None
    source: Optional[Dict[str, Any]] = dataclasses.field(default=None, compare=False, repr=False)

    def victim(self, label: str) -> VictimSpec:
        return next(v for v in self.victims if v.label == label)

    def attack(self, label: str) -> AttackSpec:
        return next(a for a in self.attacks if a.label == label)

    def probes_of(self, victim: VictimSpec) -> List[ProbeSpec]:
        return [p for p in self.probes if victim.probes is None or p.label in victim.probes]


# ----------------------------------------------------------------------------------------------- resolution
TOP_KEYS = ("name", "seed", "seeds", "out", "data", "victims", "victim_recipes", "attacks", "probes", "eval",
            "trainer", "logger", "each")
VICTIM_OWN = ("name", "label", "probes")
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelSpec))          # in a victim entry: ``model`` is name
VICTIM_MODEL_KEYS = ("model",) + MODEL_KEYS[1:]
FINETUNE_KEYS = tuple(f.name for f in dataclasses.fields(FinetuneParams))
ATTACK_OWN = ("name", "label", "surrogates", "weights", "seed")
DATA_OWN = ("name",)
DEFAULT_VICTIM = {"name": "lora", "model": "tiny-llava"}


def resolve(tree: Mapping[str, Any], source: str = "<recipe>") -> RunSpec:
    """A recipe's merged mapping -> the checked, typed spec tree. Errors: ``UserError`` naming source and key."""
    load_plugins()
    try:
        return _resolve(dict(tree))
    except UserError as err:
        raise located(source, err) from None


def _resolve(t: Dict[str, Any]) -> RunSpec:
    unknown = [k for k in t if k not in TOP_KEYS]
    if unknown:
        raise UserError(f"key '{unknown[0]}': not a recipe section; allowed: {', '.join(TOP_KEYS)}")
    each = mapping_at(t.get("each") or {}, "each")
    seed = value_at(t.get("seed", 0), int, "seed")
    if seed < 0:
        raise UserError(f"key 'seed': {seed} is negative")
    seeds = None
    if t.get("seeds") is not None:
        seeds = coerce_list(t["seeds"], "seeds", int)
        if not seeds or any(x < 0 for x in seeds) or len(set(seeds)) != len(seeds):
            raise UserError(f"key 'seeds': {seeds} must be distinct seeds >= 0 (e.g. [0, 1, 2])")
    name = value_at(t.get("name", "recipe"), str, "name")
    data = _data(mapping_at(t.get("data") or {"name": "synthetic"}, "data"), mapping_at(each.get("data") or {},
                                                                                    "each.data"), seed)
    probes = _probes(list_at(t.get("probes", [{"name": "none"}]), "probes"), each)
    victims = _victims(t, seed, each, [p.label for p in probes])
    attacks = _attacks(list_at(t.get("attacks") or [], "attacks"), seed, victims, each)
    return RunSpec(
        name=name, seed=seed, out=value_at(t.get("out", f"runs/{name}"), str, "out"), data=data, victims=victims,
        attacks=attacks, probes=probes,
        eval=EvalParams(**bind(EvalParams, mapping_at(t.get("eval") or {}, "eval"), "eval", what="section 'eval'")),
        trainer=TrainerParams(**bind(TrainerParams, mapping_at(t.get("trainer") or {}, "trainer"), "trainer",
                                     what="section 'trainer'")),
        logger=LoggerParams(**bind(LoggerParams, mapping_at(t.get("logger") or {}, "logger"), "logger",
                                   what="section 'logger'")),
        seeds=seeds, source={k: v for k, v in t.items() if k != "seed"} if seeds else None)


# -- data
def _data(raw: Dict[str, Any], each: Dict[str, Any], seed: int) -> DataSpec:
    from mmguard.data.checks import check_splits

    if "name" not in raw:
        raise UserError(f"key 'data.name' is missing; allowed: {', '.join(DATASETS.names())}")
    name = _registered(DATASETS, raw["name"], "data.name")
    loader = DATASETS.get(name)
    check_keys = [k for k in declared(check_splits) if k != "splits"]
    raw = {**raw, **{k: v for k, v in each.items() if k in declared(loader) or k in check_keys}}
    if "seed" in declared(loader) and raw.get("seed") is None:
        raw["seed"] = seed  # the data draw (generated images, a split, a subsample) follows the recipe's seed
    loader_values = {k: v for k, v in raw.items() if k not in check_keys and k not in DATA_OWN}
    params = bind(loader, loader_values, "data", what=f"dataset '{name}'")
    checks = bind(check_splits, {k: v for k, v in raw.items() if k in check_keys}, "data", exclude=("splits",))
    return DataSpec(name, params, checks)


# -- probes
def _probes(raw: List[Any], each: Dict[str, Any]) -> List[ProbeSpec]:
    out = [_probe(p, f"probes.{i}", mapping_at(each.get("probes") or {}, "each.probes")) for i, p in enumerate(raw)]
    unique_at([p.label for p in out], "probes", "two probes are labelled '{}'; give one a distinct 'label'")
    return out


def _probe(raw: Any, key: str, each: Optional[Dict[str, Any]] = None) -> ProbeSpec:
    raw = {"name": raw} if isinstance(raw, str) else mapping_at(raw, key)
    if "name" not in raw:
        raise UserError(f"key '{key}.name' is missing; allowed: none, {', '.join(PROBES.names())}")
    name = value_at(raw["name"], str, f"{key}.name")
    label = label_at(raw.get("label", name), f"{key}.label")
    if name == "none":
        extra = [k for k in raw if k not in ("name", "label")]
        if extra:
            raise UserError(f"key '{key}.{extra[0]}': probe 'none' takes no parameters")
        return ProbeSpec("none", label)
    cls = PROBES.get(_registered(PROBES, name, f"{key}.name", extra=("none",)))
    raw = {**raw, **{k: v for k, v in (each or {}).items() if k in declared(cls)}}
    return ProbeSpec(name, label, bind(cls, raw, key, what=f"probe '{name}'", skip=("name", "label")))


# -- victims
def _victims(t: Dict[str, Any], seed: int, each: Dict[str, Any], probe_labels: Sequence[str]) -> List[VictimSpec]:
    raw = [mapping_at(v, f"victims.{i}") for i, v in enumerate(list_at(t.get("victims", [DEFAULT_VICTIM]), "victims"))]
    recipes = t.get("victim_recipes")
    if recipes is not None:
        raw = _expand_recipes(raw, list_at(recipes, "victim_recipes"))
    each_v = mapping_at(each.get("victims") or {}, "each.victims")
    out = []
    for i, v in enumerate(raw):
        key = f"victims.{i}"
        if "name" not in v:
            raise UserError(f"key '{key}.name' is missing; allowed: {', '.join(VICTIMS.names())}")
        cls = VICTIMS.get(_registered(VICTIMS, v["name"], f"{key}.name"))
        v = {**v, **{k: x for k, x in each_v.items() if k in _victim_keys(cls)}}
        out.append(_victim(v, cls, key, seed, probe_labels))
    unique_at([v.label for v in out], "victims", "two victims are labelled '{}'; give one a distinct 'label', e.g. "
                                               "'{{model}}/{{name}}+adv'")
    return out


def _victim_keys(cls) -> List[str]:
    return [*VICTIM_OWN, *VICTIM_MODEL_KEYS, *FINETUNE_KEYS, *declared(cls)]


def _victim(v: Dict[str, Any], cls, key: str, seed: int, probe_labels: Sequence[str]) -> VictimSpec:
    name = v["name"]
    allowed = _victim_keys(cls)
    unknown = [k for k in v if k not in allowed]
    if unknown:
        raise UserError(f"key '{key}.{unknown[0]}': not a key of victim '{name}'; allowed: {', '.join(allowed)}")
    model = _model({"name": v.get("model", DEFAULT_VICTIM["model"]),
                    **{k: v[k] for k in MODEL_KEYS[1:] if k in v}}, key, seed, name_key="model")
    finetune = FinetuneParams(**bind(FinetuneParams, {k: v[k] for k in FINETUNE_KEYS if k in v}, key,
                                     what=f"victim '{name}'"))
    params = bind(cls, {k: v[k] for k in declared(cls) if k in v}, key, what=f"victim '{name}'")
    template = v.get("label") or "{model}/{name}"
    try:
        label = str(template).format(model=model.name, name=name)
    except (KeyError, IndexError, ValueError) as err:
        raise UserError(f"key '{key}.label': '{template}' has a bad placeholder ({err}); allowed: {{model}}, "
                        "{name}") from None
    probes = None
    if v.get("probes") is not None:
        probes = coerce_list(v["probes"], f"{key}.probes")
        for j, p in enumerate(probes):
            if p not in probe_labels:
                raise UserError(f"key '{key}.probes.{j}': '{p}' is not the label of a probe of this recipe; "
                                f"allowed: {', '.join(probe_labels)}")
    return VictimSpec(name, label_at(label, f"{key}.label", slash=True), model, params, finetune, probes)


def _expand_recipes(victims: List[Dict[str, Any]], recipes: List[Any]) -> List[Dict[str, Any]]:
    """``victim_recipes``: each victim becomes one victim per entry (a victim name, or a mapping of victim keys
    to change), the fine-tuning recipe as an axis. A victim's own parameters (rank, alpha, dropout) carry over to
    the entries whose victim declares them. Identical results are kept once."""
    changes = []
    for i, r in enumerate(recipes):
        key = f"victim_recipes.{i}"
        change = {"name": r} if isinstance(r, str) else mapping_at(r, key)
        if "name" in change:
            _registered(VICTIMS, change["name"], f"{key}.name")
        for k in change:
            allowed = {*VICTIM_OWN, *VICTIM_MODEL_KEYS, *FINETUNE_KEYS,
                       *(p for n in VICTIMS.names() for p in declared(VICTIMS.get(n)))}
            if k not in allowed:
                raise UserError(f"key '{key}.{k}': not a victim key; allowed keys: {', '.join(sorted(allowed))}")
        changes.append(change)
    out: List[Dict[str, Any]] = []
    for base in victims:
        for change in changes:
            new = {**base, **change}
            cls = VICTIMS.get(_registered(VICTIMS, new.get("name"), "victims.name"))
            own = {p for n in VICTIMS.names() for p in declared(VICTIMS.get(n))} - set(declared(cls))
            new = {k: x for k, x in new.items() if k not in own or k in change}
            if base.get("label") and "label" not in change and "{name}" not in str(base["label"]):
                new["label"] = str(base["label"]) + "/{name}"
            if new not in out:
                out.append(new)
    return out


# -- attacks
def _attacks(raw: List[Any], seed: int, victims: List[VictimSpec], each: Dict[str, Any]) -> List[AttackSpec]:
    each_a = mapping_at(each.get("attacks") or {}, "each.attacks")
    each_s = mapping_at(each.get("surrogates") or {}, "each.surrogates")
    out = [_attack(mapping_at(a, f"attacks.{i}"), f"attacks.{i}", seed, victims, each_a, each_s)
           for i, a in enumerate(raw)]
    unique_at([a.label for a in out], "attacks", "two attacks are labelled '{}'; give one a distinct 'label'")
    return out


def _attack_keys(cls) -> List[str]:
    sections = attack_sections(cls)
    return [*ATTACK_OWN, *(k for k, s in LOOP_SECTIONS.items() if s in sections), *declared(cls)]


def _attack(a: Dict[str, Any], key: str, seed: int, victims: List[VictimSpec], each: Dict[str, Any],
            each_surrogate: Dict[str, Any]) -> AttackSpec:
    if "name" not in a:
        raise UserError(f"key '{key}.name' is missing; allowed: {', '.join(ATTACKS.names())}")
    name = _registered(ATTACKS, a["name"], f"{key}.name")
    cls = ATTACKS.get(name)
    allowed = _attack_keys(cls)
    a = {**a, **{k: v for k, v in each.items() if k in allowed}}
    for k in a:
        if k in allowed:
            continue
        if k in LOOP_SECTIONS:
            raise UserError(f"key '{key}.{k}': applies to {SECTION_TEXT[LOOP_SECTIONS[k]]}; '{name}' is not one")
        raise UserError(f"key '{key}.{k}': not a key of attack '{name}'; allowed: {', '.join(allowed)}")
    label = label_at(a.get("label", name), f"{key}.label")
    attack_seed = seed if a.get("seed") is None else value_at(a["seed"], int, f"{key}.seed")
    loop_values = {**cls.loop_defaults, **{k: v for k, v in a.items() if k in LOOP_SECTIONS}}
    loop = LoopParams(**bind(LoopParams, loop_values, key, what=f"attack '{name}'"))
    params = bind(cls, {k: v for k, v in a.items() if k in declared(cls)}, key, what=f"attack '{name}'")
    surrogates = _surrogates(a.get("surrogates"), f"{key}.surrogates", attack_seed, victims, each_surrogate)
    weights = _weights(a.get("weights"), len(surrogates), f"{key}.weights")
    eot = [_probe(p, f"{key}.eot.{j}") for j, p in enumerate(loop.eot)]
    for j, p in enumerate(eot):
        problem = _eot_problem(p)
        if problem:
            raise UserError(f"key '{key}.eot.{j}': {problem}")
    return AttackSpec(name, label, surrogates, weights, attack_seed, loop, params, eot)


def _surrogates(raw: Any, key: str, seed: int, victims: List[VictimSpec], each: Dict[str, Any]) -> List[ModelSpec]:
    if raw is None or raw == []:
        if not victims:
            raise UserError(f"key '{key}': no surrogates given and no victim to default to")
        # white-box by default: the first victim's model, as the victim builds it (same seed)
        base = dataclasses.asdict(victims[0].model)
        return [_model({**base, **{k: v for k, v in each.items() if k in MODEL_KEYS}}, f"{key}.0", seed)]
    out = []
    for i, s in enumerate(list_at(raw, key)):
        s = {"name": s} if isinstance(s, str) else mapping_at(s, f"{key}.{i}")
        s = {**s, **{k: v for k, v in each.items() if k in MODEL_KEYS}}
        out.append(_model(s, f"{key}.{i}", seed))
    return out


def _weights(raw: Any, n: int, key: str) -> List[float]:
    if raw is None:
        return [1.0 / n] * n
    values = coerce_list(raw, key, float)
    if len(values) != n:
        raise UserError(f"key '{key}': {len(values)} weights for {n} surrogates")
    if any(w < 0 for w in values) or sum(values) <= 0:
        raise UserError(f"key '{key}': weights must be >= 0 with a positive sum, got {values}")
    return [w / sum(values) for w in values]


def _eot_problem(p: ProbeSpec) -> Optional[str]:
    if p.name == "none":
        return None
    cls = PROBES.get(p.name)
    if not cls.changes_image(p.params):
        return f"probe '{p.name}' does not change images"
    if not cls.has_differentiable(p.params):
        return f"probe '{p.name}' has no differentiable version"
    return None


# -- models
def _model(raw: Dict[str, Any], key: str, seed: int, name_key: str = "name") -> ModelSpec:
    values = bind(ModelSpec, raw, key, what="a model")
    values["name"] = value_at(values["name"], str, f"{key}.{name_key}")
    try:
        resolve_model_name(values["name"])
    except UserError as err:
        raise UserError(f"key '{key}.{name_key}': {err}") from None
    if values["seed"] is None:
        values["seed"] = seed
    return ModelSpec(**values)


# -- small helpers
def _registered(registry, name: Any, key: str, extra: Sequence[str] = ()) -> str:
    if name in extra:
        return name
    if not isinstance(name, str) or name not in registry:
        raise UserError(f"key '{key}': {registry.unknown_message(str(name))}")
    return name
