"""Recipes: YAML read through omegaconf, with includes, dot-list overrides and typed validation.

A recipe names components (data set, models, victims, attacks, probes) and their arguments; nothing here
builds them. Errors name the file, the key and the allowed values, and are raised before any work starts.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmguard.core.registry import ATTACKS, DATASETS, MODELS, PROBES, VICTIMS, Registry


class RecipeError(ValueError):
    """A recipe that cannot run: the message says which file and key, and what is allowed."""


@dataclasses.dataclass
class VictimConfig:
    name: str = "lora"
    model: str = "tiny-llava"
    pretrained: bool = True
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    precision: str = "32-true"
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    trust_remote_code: bool = False
    seed: Optional[int] = None
    # adversarial training (PGD on the images inside the fine-tuning loop); 0 = off
    adv_eps: Any = 0.0      # a number or a fraction such as 8/255
    adv_steps: int = 0
    adv_alpha: Any = 0.0    # 0: 2.5 * adv_eps / adv_steps
    # the row label: "{model}/{name}" unless given (placeholders {model} and {name}), e.g. "{model}/{name}+adv"
    label: Optional[str] = None
    # labels of the probes this victim runs (null: every probe of the recipe)
    probes: Optional[List[str]] = None


@dataclasses.dataclass
class EvalConfig:
    zero_shot: bool = True
    max_new_tokens: int = 8
    batch_size: int = 64


@dataclasses.dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    progress_bar: bool = True
    deterministic: bool = True


@dataclasses.dataclass
class LoggerConfig:
    name: str = "csv"  # csv | tensorboard | wandb | none
    project: str = "mmguard"
    entity: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    offline: Optional[bool] = None  # wandb: None = offline unless WANDB_API_KEY is set


@dataclasses.dataclass
class RecipeSchema:
    name: str = "recipe"
    seed: int = 0
    out: str = "runs/${name}"
    data: Dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "synthetic"})
    victims: List[VictimConfig] = dataclasses.field(default_factory=lambda: [VictimConfig()])
    attacks: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    probes: List[Dict[str, Any]] = dataclasses.field(default_factory=lambda: [{"name": "none"}])
    # fine-tuning recipes as a probe axis: each victim becomes one victim per entry (a victim name, or a
    # mapping of victim keys to change, e.g. {name: dora, probes: [none]}); expanded at validation
    victim_recipes: Optional[List[Any]] = None
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)


LOGGER_NAMES = ("csv", "tensorboard", "wandb", "none")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")


def _read_yaml(path: Path, seen: Sequence[Path] = ()) -> DictConfig:
    if not path.exists():
        raise RecipeError(f"recipe file '{path}' does not exist")
    if path.resolve() in seen:
        raise RecipeError(f"recipe '{path}' includes itself (through {' -> '.join(str(p) for p in seen)})")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml syntax
        raise RecipeError(f"recipe '{path}' is not valid YAML: {err}") from err
    if not isinstance(cfg, DictConfig):
        raise RecipeError(f"recipe '{path}' must be a mapping at the top level")
    includes = cfg.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    merged = OmegaConf.create()
    for inc in includes:
        merged = OmegaConf.merge(merged, _read_yaml(path.parent / str(inc), [*seen, path.resolve()]))
    return OmegaConf.merge(merged, cfg)


def load_recipe(path: str | Path, overrides: Sequence[str] = (), overlays: Sequence[str | Path] = ()) -> DictConfig:
    """Read a recipe (and its includes), merge ``overlays`` (other recipe files, later ones win: sizing shared
    by several recipes), apply dot-list overrides, validate, and return it resolved."""
    path = Path(path)
    raw = _read_yaml(path)
    for overlay in overlays:
        raw = OmegaConf.merge(raw, _read_yaml(Path(overlay)))
    if "name" not in raw:
        raw.name = path.stem
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"bad command-line override '{item}': expected key=value (e.g. victims.0.epochs=3)")
        key, value = item.split("=", 1)
        try:
            parsed.append((key.strip(), yaml.safe_load(value) if value != "" else None))
        except yaml.YAMLError as err:
            raise RecipeError(f"bad command-line override '{item}': {err}") from err
    # switching the data set on the command line drops the recipe's arguments for the old one
    # (``data.name=llava_json data.train=... data.test=...`` on a synthetic recipe)
    new_name = dict(parsed).get("data.name")
    if new_name is not None and new_name != raw.get("data", {}).get("name"):
        raw.data = {}
    for key, value in parsed:
        try:
            OmegaConf.update(raw, key, value, merge=True, force_add=True)
        except (OmegaConfBaseException, IndexError, ValueError) as err:
            raise RecipeError(f"bad command-line override '{key}={value}': {err}") from err
    return validate(raw, source=str(path))


def victim_label(v) -> str:
    """A victim's row label: its ``label`` (placeholders {model}, {name}) or "model/name"."""
    label = getattr(v, "label", None) or "{model}/{name}"
    return str(label).format(model=v.model, name=v.name)


def probe_label(probe) -> str:
    return probe.get("label") or probe["name"]


def _check_victim_recipes(cfg: DictConfig, source: str) -> None:
    """``victim_recipes`` entries: victim names or mappings of VictimConfig keys (checked before the merge, so
    an error names the entry)."""
    recipes = cfg.get("victim_recipes")
    if recipes is None:
        return
    if isinstance(recipes, str):
        cfg.victim_recipes = recipes = [recipes]
    if not OmegaConf.is_list(recipes) and not isinstance(recipes, list):
        raise RecipeError(f"{source}: key 'victim_recipes': expected a list of victim recipes; allowed: "
                          f"{', '.join(VICTIMS.names())}")
    fields = _fields_of("victims")
    for i, r in enumerate(recipes):
        key = f"victim_recipes.{i}"
        if isinstance(r, str):
            _require(VICTIMS, r, key, source)
            continue
        if not OmegaConf.is_dict(r):
            raise RecipeError(f"{source}: key '{key}': expected a victim name ({', '.join(VICTIMS.names())}) or a "
                              f"mapping of victim keys, got {r!r}")
        for k in r:
            if k not in fields:
                raise RecipeError(f"{source}: key '{key}.{k}' is not a victim key; allowed keys: {', '.join(fields)}")
        if "name" in r:
            _require(VICTIMS, r.name, f"{key}.name", source)
        try:
            OmegaConf.merge(OmegaConf.structured(VictimConfig), r)
        except OmegaConfBaseException as err:
            raise RecipeError(f"{source}: key '{key}.{getattr(err, 'full_key', '') or '?'}': {_first_line(err)}"
                              ) from None


def expand_victim_recipes(cfg: DictConfig) -> None:
    """Each victim -> one victim per ``victim_recipes`` entry (same model and settings, the entry's changes);
    identical results are kept once. The key is cleared afterwards, so validating the result again (a run's
    saved recipe.yaml) changes nothing."""
    recipes = cfg.get("victim_recipes")
    if not recipes:
        return
    out: List[Dict[str, Any]] = []
    for v in cfg.victims:
        base = OmegaConf.to_container(v, resolve=True)
        for r in recipes:
            changes = {"name": r} if isinstance(r, str) else OmegaConf.to_container(r, resolve=True)
            new = {**base, **changes}
            if base.get("label") and "label" not in changes and "{name}" not in base["label"]:
                new["label"] = base["label"] + "/{name}"
            if new not in out:
                out.append(new)
    cfg.victims = [OmegaConf.merge(OmegaConf.structured(VictimConfig), v) for v in out]
    cfg.victim_recipes = None


def validate(cfg: DictConfig, source: str = "<recipe>") -> DictConfig:
    schema = OmegaConf.structured(RecipeSchema)
    _check_victim_recipes(cfg, source)
    # list entries first, so that an error names its index ("victims.1.epochs"), which a whole-recipe merge loses
    for i, v in enumerate(cfg.get("victims") or []):
        try:
            OmegaConf.merge(OmegaConf.structured(VictimConfig), v)
        except OmegaConfBaseException as err:
            key = f"victims.{i}.{getattr(err, 'full_key', '') or '?'}"
            allowed = f"; allowed keys: {', '.join(_fields_of('victims'))}" if "Key" in type(err).__name__ else ""
            raise RecipeError(f"{source}: key '{key}': {_first_line(err)}{allowed}") from None
    try:
        merged = OmegaConf.merge(schema, cfg)
        OmegaConf.resolve(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        allowed = ""
        if "Key" in type(err).__name__ and "." in str(key):
            parent = str(key).rsplit(".", 1)[0].split(".")[0]
            fields = _fields_of(parent)
            allowed = f"; allowed keys: {', '.join(fields)}" if fields else ""
        elif "Key" in type(err).__name__:
            allowed = f"; allowed keys: {', '.join(f.name for f in dataclasses.fields(RecipeSchema))}"
        raise RecipeError(f"{source}: key '{key}': {_first_line(err)}{allowed}") from None
    except TypeError as err:  # e.g. an override 'victims.0.x=...' where the recipe has no victims list
        raise RecipeError(f"{source}: {err}: a section has the wrong shape (a list where a mapping is expected, "
                          f"or the reverse); sections: {', '.join(f.name for f in dataclasses.fields(RecipeSchema))}"
                          ) from None
    expand_victim_recipes(merged)
    _check_names(merged, source)
    return merged


def _first_line(err: Exception) -> str:
    return str(getattr(err, "msg", err)).splitlines()[0]


def _fields_of(section: str) -> List[str]:
    kinds = {"victims": VictimConfig, "eval": EvalConfig, "trainer": TrainerConfig, "logger": LoggerConfig}
    cls = kinds.get(section)
    return [f.name for f in dataclasses.fields(cls)] if cls else []


def _require(registry: Registry, name: Any, key: str, source: str, extra: Sequence[str] = ()) -> None:
    if name in extra:
        return
    if name not in registry:
        raise RecipeError(f"{source}: key '{key}': {registry.unknown_message(str(name))}")


def _check_names(cfg: DictConfig, source: str) -> None:
    if "name" not in cfg.data:
        raise RecipeError(f"{source}: key 'data.name' is missing; allowed: {', '.join(DATASETS.names())}")
    _require(DATASETS, cfg.data.name, "data.name", source)
    _check_kwargs(DATASETS.get(cfg.data.name), cfg.data, "data", source, skip=("name",))
    for i, v in enumerate(cfg.victims):
        _require(VICTIMS, v.name, f"victims.{i}.name", source)
        if str(v.model).startswith("tiny-"):
            _require(MODELS, v.model, f"victims.{i}.model", source)
        if v.precision not in PRECISIONS:
            raise RecipeError(f"{source}: key 'victims.{i}.precision': '{v.precision}' is not one of "
                              f"{', '.join(PRECISIONS)}")
    for i, a in enumerate(cfg.attacks):
        if "name" not in a:
            raise RecipeError(f"{source}: key 'attacks.{i}.name' is missing; allowed: {', '.join(ATTACKS.names())}")
        _require(ATTACKS, a.name, f"attacks.{i}.name", source)
        params = {k: v for k, v in OmegaConf.to_container(a, resolve=True).items()
                  if k not in ("name", "surrogates", "label")}
        _try_build(ATTACKS, a.name, params, f"attacks.{i}", source)
    for i, p in enumerate(cfg.probes):
        if isinstance(p, str):
            cfg.probes[i] = {"name": p}
            p = cfg.probes[i]
        if "name" not in p:
            raise RecipeError(f"{source}: key 'probes.{i}.name' is missing; allowed: none, {', '.join(PROBES.names())}")
        _require(PROBES, p.name, f"probes.{i}.name", source, extra=("none",))
        if p.name != "none":
            params = {k: v for k, v in OmegaConf.to_container(p, resolve=True).items() if k not in ("name", "label")}
            _try_build(PROBES, p.name, params, f"probes.{i}", source)
    probe_labels = [probe_label(p) for p in cfg.probes]
    dup = sorted({p for p in probe_labels if probe_labels.count(p) > 1})
    if dup:
        raise RecipeError(f"{source}: key 'probes': two probes are labelled '{dup[0]}'; give one a distinct 'label'")
    labels = []
    for i, v in enumerate(cfg.victims):
        try:
            labels.append(victim_label(v))
        except (KeyError, IndexError, ValueError) as err:
            raise RecipeError(f"{source}: key 'victims.{i}.label': '{v.label}' has a bad placeholder ({err}); "
                              f"allowed: {{model}}, {{name}}") from None
        for j, p in enumerate(v.probes or []):
            if p not in probe_labels:
                raise RecipeError(f"{source}: key 'victims.{i}.probes.{j}': '{p}' is not the label of a probe of "
                                  f"this recipe; allowed: {', '.join(probe_labels)}")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise RecipeError(f"{source}: key 'victims': two victims are labelled '{dup[0]}' (model/name); give one "
                          f"a distinct 'label', e.g. '{{model}}/{{name}}+adv'")
    if cfg.logger.name not in LOGGER_NAMES:
        raise RecipeError(f"{source}: key 'logger.name': '{cfg.logger.name}' is not one of {', '.join(LOGGER_NAMES)}")


def _try_build(registry: Registry, name: str, params: Dict[str, Any], key: str, source: str) -> None:
    """Build the component once (cheap: no model) so that a bad parameter fails before any work starts."""
    try:
        registry.build(name, **params)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{source}: key '{key}' ({name}): {err}") from None


def _check_kwargs(fn, section: DictConfig, key: str, source: str, skip: Sequence[str] = ()) -> None:
    """Keys of a section must be parameters of the component it names."""
    sig = inspect.signature(fn)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [n for n in sig.parameters if n not in skip]
    for k in section:
        if k not in skip and k not in allowed:
            raise RecipeError(f"{source}: key '{key}.{k}' is not a parameter of {key} '{section.name}'; "
                              f"allowed: {', '.join(allowed)}")


def to_container(cfg: DictConfig) -> Dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def dump(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


