"""The engine's settings, declared once with their ranges: how the protection loop runs an attack
(``LoopParams``), how a victim fine-tunes (``FinetuneParams``), evaluation, the Lightning trainer and the logger.

Components declare their own parameters next to themselves (an attack's objective, a probe, a victim's adapter, a
loader); these are the settings of the loops that run them. ``config/spec.py`` binds recipe keys to both.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from mmguard.core.constants import SURROGATE_LORA_DROPOUT
from mmguard.core.params import (NonNegativeFloat, NonNegativeInt, ParamError, PositiveFloat, PositiveInt, at_least,
                                 between)

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")
Precision = Literal["auto", "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"]

# Which attacks a loop setting applies to (an attack's flags say which sections it has): a key outside them is
# refused rather than accepted and ignored.
IMAGE, PGD, TEXT, ROUNDS = "image", "pgd", "text", "rounds"
SECTION_TEXT = {IMAGE: "attacks that perturb the image", PGD: "attacks that optimize the image perturbation",
                TEXT: "attacks with a text trigger", ROUNDS: "attacks that optimize (not random noise)"}


def attack_sections(cls) -> List[str]:
    """The loop sections an attack class has, from what it perturbs and whether it optimizes."""
    sections = []
    if cls.image:
        sections.append(IMAGE)
        if cls.optimize:
            sections.append(PGD)
    if cls.text:
        sections.append(TEXT)
    if cls.optimize:
        sections.append(ROUNDS)
    return sections


def _in(section: str, default: Any, doc: str = ""):
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"section": section, "doc": doc})
    return dataclasses.field(default=default, metadata={"section": section, "doc": doc})


def rms_for_psnr(psnr: float) -> float:
    """The largest RMS perturbation (images in [0, 1]) whose released 8-bit image surely keeps PSNR >= psnr.
    The release rounds x + delta to 1/255; for an 8-bit original that moves each pixel by at most half a level,
    so (triangle inequality) the released RMS is at most rms(delta) + 0.5/255."""
    return 10.0 ** (-psnr / 20.0) - 0.5 / 255.0


@dataclasses.dataclass
class LoopParams:
    """METHOD.md's alternating algorithm: R rounds of (Q LoRA steps on every surrogate, then per batch P sign-PGD
    steps on delta and one HotFlip round on the trigger). Defaults as METHOD.md; an attack class may change
    them (``loop_defaults``)."""

    # the image budget
    eps_x: Annotated[float, between(1 / 255, 1)] = _in(IMAGE, 8 / 255, "L-inf budget of delta")
    psnr_min: Optional[Annotated[float, between(0, 50, lo_open=True)]] = _in(
        IMAGE, None, "a PSNR floor (dB) on every released image: delta is shrunk after each step (not in METHOD.md)")
    init: Literal["zero", "uniform"] = _in(IMAGE, "zero", "delta at round 0")
    # PGD on the image
    alpha: PositiveFloat = _in(PGD, 1 / 255, "sign-PGD step")
    P: PositiveInt = _in(PGD, 5, "PGD steps per batch per round")
    eot: List[Dict[str, Any]] = _in(PGD, [], "probes whose differentiable versions the image loss averages over")
    # HotFlip on the trigger
    eps_t: Annotated[int, between(1, 20)] = _in(TEXT, 5, "trigger length in tokens")
    top_k: PositiveInt = _in(TEXT, 64, "HotFlip candidates per position")
    verify_k: Optional[PositiveInt] = _in(TEXT, None, "of the top-K, how many are verified exactly (null: all)")
    hotflip_every: PositiveInt = _in(TEXT, 1, "HotFlip on a batch every n-th round")
    trigger_at: Literal["end", "inside"] = _in(
        TEXT, "end", "where the trigger goes: after the question, or at a word boundary inside it that stripping "
                     "what follows the question's last '?' keeps (attacks/insertion.py; not in METHOD.md)")
    # rounds and surrogate adaptation
    R: PositiveInt = _in(ROUNDS, 10, "outer rounds")
    Q: NonNegativeInt = _in(ROUNDS, 1, "surrogate LoRA adaptation steps per round")
    batch_size: PositiveInt = _in(ROUNDS, 32, "samples per PGD/HotFlip batch and per adaptation step")
    stop_accuracy: Annotated[float, between(0, 1, lo_open=True)] = _in(
        ROUNDS, 0.99, "stop when the surrogates' training accuracy on the protected data reaches this")
    lora_rank: PositiveInt = _in(ROUNDS, 8)
    lora_alpha: PositiveFloat = _in(ROUNDS, 16.0)
    lora_dropout: Annotated[float, between(0, 1, hi_open=True)] = _in(ROUNDS, SURROGATE_LORA_DROPOUT)
    lora_lr: PositiveFloat = _in(ROUNDS, 1e-3)
    reinit: bool = _in(ROUNDS, True, "re-initialize the surrogates' adapters every round")
    # how the loop runs on the hardware (not METHOD.md's; results do not depend on them except through precision)
    precision: Precision = _in(ROUNDS, "auto", "auto: bf16 mixed precision on GPUs that have it, else 32-bit")
    micro_batch_size: Optional[PositiveInt] = _in(
        ROUNDS, None, "split each batch's PGD and HotFlip passes into micro-batches (gradients accumulate)")
    gradient_checkpointing: bool = _in(ROUNDS, False, "recompute the surrogates' activations in the backward pass")
    checkpoint_every: Optional[PositiveInt] = _in(
        ROUNDS, None, "also checkpoint every n batches (always at each round's end)")

    def __post_init__(self) -> None:
        if self.verify_k is not None and self.verify_k > self.top_k:
            raise ParamError("verify_k", f"{self.verify_k} exceeds top_k ({self.top_k}): only top_k candidates exist")
        if self.psnr_min is not None:
            if rms_for_psnr(self.psnr_min) <= 0:
                raise ParamError("psnr_min", f"{self.psnr_min} dB is above what 8-bit rounding allows (about 48 dB)")
            guaranteed = 20 * math.log10(1 / self.eps_x)
            if self.psnr_min <= guaranteed:
                raise ParamError("psnr_min", f"{self.psnr_min} dB never binds: eps_x {self.eps_x * 255:.3g}/255 "
                                             f"already guarantees {guaranteed:.1f} dB; raise it or drop it")

    @staticmethod
    def section(name: str) -> str:
        return LOOP_SECTIONS[name]


LOOP_SECTIONS = {f.name: f.metadata["section"] for f in dataclasses.fields(LoopParams)}


@dataclasses.dataclass
class FinetuneParams:
    """How a victim fine-tunes: AdamW with a cosine schedule after a linear warm-up. Adversarial training (PGD on
    the raw images inside the loop) is on when ``adv_eps`` > 0."""

    epochs: PositiveInt = 10
    lr: PositiveFloat = 1e-3
    batch_size: PositiveInt = 16
    grad_accum: PositiveInt = 1
    warmup_ratio: Annotated[float, between(0, 1, hi_open=True)] = 0.1
    weight_decay: NonNegativeFloat = 0.0
    precision: Precision = "auto"
    adv_eps: Annotated[float, between(0, 1)] = 0.0
    adv_steps: NonNegativeInt = 0
    adv_alpha: NonNegativeFloat = 0.0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.adv_eps > 0 and self.adv_steps == 0:
            raise ParamError("adv_steps", "adversarial training (adv_eps > 0) needs adv_steps >= 1")
        if self.adv_steps > 0 and self.adv_eps == 0:
            raise ParamError("adv_eps", f"adv_steps {self.adv_steps} without a budget: set adv_eps > 0 (e.g. 8/255)")
        if self.adv_alpha > 0 and self.adv_eps == 0:
            raise ParamError("adv_alpha", "adv_alpha without adversarial training: set adv_eps and adv_steps")

    @property
    def adversarial(self) -> bool:
        return self.adv_eps > 0


@dataclasses.dataclass
class EvalParams:
    """How rows are evaluated on the clean test set. ``per_epoch``: also after every fine-tuning epoch, so that
    rows carry ``epoch_accuracy`` and the peak (``peak_accuracy``, ``peak_epoch``) beside the final accuracy;
    the fine-tune itself is unchanged."""

    zero_shot: bool = True
    max_new_tokens: PositiveInt = 8
    batch_size: PositiveInt = 64
    per_epoch: bool = False

    def key(self) -> Dict[str, Any]:
        """What a row's number depends on: every setting, ``per_epoch`` only when on (it adds numbers and changes
        none, so rows measured before it existed keep their keys)."""
        out = dataclasses.asdict(self)
        if not out["per_epoch"]:
            del out["per_epoch"]
        return out


@dataclasses.dataclass
class TrainerParams:
    """Lightning's Trainer: devices, strategy and nodes as Lightning names them. ``deterministic`` null: true on
    CPU, "warn" on GPUs (antialiased resizing has no deterministic CUDA backward)."""

    accelerator: str = "auto"
    devices: Union[Annotated[int, at_least(-1)], str, List[NonNegativeInt]] = 1
    strategy: str = "auto"
    num_nodes: PositiveInt = 1
    progress_bar: bool = True
    deterministic: Optional[Union[bool, Literal["warn"]]] = None


@dataclasses.dataclass
class LoggerParams:
    """csv (default), tensorboard, wandb (offline unless WANDB_API_KEY is set) or none. ``artifacts``: W&B keeps
    each protected set folder as a versioned artifact (off by default: a paper-size release is gigabytes)."""

    name: Literal["csv", "tensorboard", "wandb", "none"] = "csv"
    project: str = "mmguard"
    entity: Optional[str] = None
    tags: List[str] = dataclasses.field(default_factory=list)
    offline: Optional[bool] = None
    artifacts: bool = False
