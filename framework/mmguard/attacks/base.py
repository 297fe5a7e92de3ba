"""What an attack is: which side it perturbs (image, text), which loss it minimizes, and its hyperparameters.

Every hyperparameter of METHOD.md is a recipe key with METHOD.md's default. The engine
(``engine/protection.py``) runs the alternating algorithm; an attack only says what to optimize.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence


def parse_number(value: Any, key: str = "") -> float:
    """Numbers or fractions written as strings in YAML ("8/255")."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(Fraction(str(value).replace(" ", "")))
    except (ValueError, ZeroDivisionError) as err:
        raise ValueError(f"attack key '{key}': '{value}' is not a number or fraction like 8/255") from err


@dataclasses.dataclass
class AttackConfig:
    """METHOD.md's hyperparameters (defaults as there)."""

    eps_x: float = 8 / 255          # L-inf image budget
    alpha: float = 1 / 255          # sign-PGD step
    P: int = 5                      # PGD steps per batch per round
    Q: int = 1                      # surrogate LoRA adaptation steps per round
    R: int = 10                     # outer rounds
    eps_t: int = 5                  # trigger length in tokens
    top_k: int = 64                 # HotFlip candidates per position
    tau: float = 0.5                # fraction of image tokens that are perturbation tokens D
    num_layers: int = 1             # |K|: the first |K| language-model layers
    lambda_train: float = 1.0
    lambda_bind: float = 1.0
    beta1: float = 1.0
    beta2: float = 1.0
    beta3: float = 1.0
    weights: Optional[List[float]] = None   # ensemble weights (default uniform)
    stop_accuracy: float = 0.99     # stop when surrogates' train accuracy on protected data passes this
    batch_size: int = 32
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_lr: float = 1e-3
    init: str = "zero"              # delta at round 0: "zero" or "uniform" in the budget (Huang's EM)
    reinit: bool = True             # re-initialize the surrogates' LoRA adapters every round (METHOD.md)
    # None: the attack's own objective. "shift": the image/text objective pulls every sample towards the NEXT
    # class's answer (class-consistent targeted adversarial poisoning, Fowl et al. 2021); l_train is then
    # minimized towards that target, also for the *_max variants. Not in METHOD.md: an extension.
    target: Optional[str] = None
    hotflip_every: int = 1          # HotFlip rounds on a batch every n-th round (1 = every round)
    verify_k: Optional[int] = None  # of the top-K, how many are verified exactly per position (None: all K)
    seed: Optional[int] = None
    # Not in METHOD.md: a PSNR floor (dB) on each released image. PGD steps are followed by a shrink of delta to
    # the RMS this PSNR allows, inside the L-inf ball, so stealth is a budget rather than a hope.
    psnr_min: Optional[float] = None
    eot: List[Dict[str, Any]] = dataclasses.field(default_factory=list)  # expectation over probes (issue 4)

    FRACTION_KEYS = ("eps_x", "alpha", "tau", "lambda_train", "lambda_bind", "beta1", "beta2", "beta3",
                     "stop_accuracy", "lora_lr", "lora_dropout", "psnr_min")


class Attack:
    """Base attack. Subclasses set the class attributes and may change defaults."""

    name = ""
    image = True            # optimizes a perturbation delta
    text = False            # optimizes a trigger gamma
    binding: Optional[str] = None   # None | "bph" | "crs"
    maximize = False        # *_max variants: -lambda_train * l_train
    optimize = True         # False: no optimization (random noise)
    classwise = False       # one delta per class (answer) instead of per sample
    defaults: Dict[str, Any] = {}

    def __init__(self, **hparams: Any):
        fields = {f.name for f in dataclasses.fields(AttackConfig)}
        unknown = [k for k in hparams if k not in fields and k not in ("name", "surrogates", "label")]
        if unknown:
            raise ValueError(f"attack '{self.name}': unknown key(s) {', '.join(unknown)}; allowed: "
                             f"surrogates, label, {', '.join(sorted(fields))}")
        values = {**self.defaults, **{k: v for k, v in hparams.items() if k in fields}}
        for k in AttackConfig.FRACTION_KEYS:
            if k in values and values[k] is not None:
                values[k] = parse_number(values[k], k)
        self.cfg = AttackConfig(**values)
        for i, spec in enumerate(self.cfg.eot):
            _check_eot(self.name, i, spec)
        if self.cfg.init not in ("zero", "uniform"):
            raise ValueError(f"attack '{self.name}': key 'init': '{self.cfg.init}' is not one of zero, uniform")
        if self.cfg.psnr_min is not None and not 0 < self.cfg.psnr_min <= 50:
            raise ValueError(f"attack '{self.name}': key 'psnr_min': {self.cfg.psnr_min} dB is outside (0, 50] "
                             "(a floor near 54 dB leaves nothing after rounding to 8 bits)")
        if self.cfg.target not in (None, "shift"):
            raise ValueError(f"attack '{self.name}': key 'target': '{self.cfg.target}' is not one of null, shift")

    def hyperparameters(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "image": self.image, "text": self.text, "binding": self.binding,
                "maximize": self.maximize, "classwise": self.classwise}


def _check_eot(attack: str, i: int, spec: Any) -> None:
    from mmguard.core.registry import PROBES

    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"attack '{attack}': key 'eot.{i}' must be a mapping with a probe 'name'")
    if spec["name"] == "none":
        return
    if spec["name"] not in PROBES:
        raise ValueError(f"attack '{attack}': key 'eot.{i}.name': {PROBES.unknown_message(spec['name'])}")
    params = {k: v for k, v in spec.items() if k not in ("name", "label")}
    probe = PROBES.build(spec["name"], **params)
    if not getattr(probe, "image", True):
        raise ValueError(f"attack '{attack}': key 'eot.{i}': probe '{spec['name']}' does not change images")
    import torch

    try:
        probe.differentiable(torch.zeros(1, 3, 16, 16))
    except NotImplementedError as err:
        raise ValueError(f"attack '{attack}': key 'eot.{i}': {err}") from None


def ensemble_weights(n: int, weights: Optional[Sequence[float]]) -> List[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ValueError(f"attack key 'weights': {len(weights)} weights for {n} surrogates")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("attack key 'weights': weights must sum to a positive number")
    return [float(w) / total for w in weights]
