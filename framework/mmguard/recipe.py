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

from mmguard.registry import ATTACKS, DATASETS, MODELS, PROBES, VICTIMS, Registry


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


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Read a recipe (and its includes), apply dot-list overrides, validate, and return it resolved."""
    path = Path(path)
    raw = _read_yaml(path)
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


def validate(cfg: DictConfig, source: str = "<recipe>") -> DictConfig:
    schema = OmegaConf.structured(RecipeSchema)
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


