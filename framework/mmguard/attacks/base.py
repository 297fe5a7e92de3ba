"""What an attack is: which side it perturbs (image, text), its objective, and the parameters of that objective.

An attack owns its science: ``loss(view)`` is its per-sample protection loss on one batch as one surrogate sees it
(``attacks/view.py``), and ``Params`` declares the objective's parameters with their ranges. How the loop runs it
(rounds, PGD steps, HotFlip, budgets) is the engine's (``config/sections.py: LoopParams``); an attack only says
which parts of the loop it uses (``image``, ``text``, ``optimize``) and may change the loop's defaults
(``loop_defaults``). A new attack is one file: a subclass registered with ``@ATTACKS.register``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Dict, List, Literal, Optional, Sequence

import torch

from mmguard.attacks import losses
from mmguard.core.params import NonNegativeFloat
from mmguard.data.sample import Sample


class Attack:
    """Base attack: error-minimizing l_train on the answer tokens (METHOD.md's l_joint without binding)."""

    name: ClassVar[str] = ""
    image: ClassVar[bool] = True        # optimizes (or, without ``optimize``, draws) a perturbation delta
    text: ClassVar[bool] = False        # optimizes a trigger gamma
    optimize: ClassVar[bool] = True     # False: no optimization (random noise)
    classwise: ClassVar[bool] = False   # one delta per class (answer) instead of per sample
    maximize: ClassVar[bool] = False    # *_max variants: -lambda_train * l_train
    loop_defaults: ClassVar[Dict[str, Any]] = {}

    @dataclasses.dataclass
    class Params:
        lambda_train: NonNegativeFloat = 1.0
        # "shift": every sample's objective pulls towards the NEXT class's answer (class-consistent targeted
        # poisoning, Fowl et al. 2021); l_train is then minimized towards that target, also for *_max variants.
        # Not in METHOD.md: an extension.
        target: Optional[Literal["shift"]] = None

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"

    # -- what the loop asks --------------------------------------------------------------------------------
    @property
    def tapped_layers(self) -> List[int]:
        """Language-model layers whose attention rows the objective reads (none without a binding term)."""
        return []

    def check_surrogate(self, name: str, language_layers: int) -> Optional[str]:
        """Why this attack cannot run on surrogate ``name`` (None: it can); asked before any work starts."""
        return None

    def objective_samples(self, samples: Sequence[Sample]) -> List[Sample]:
        """What the objective is computed on: the samples, or (``target: shift``) each with the next class's
        answer, so that the perturbation carries the wrong class's look."""
        if getattr(self.params, "target", None) != "shift":
            return list(samples)
        classes = sorted({s.answer for s in samples})
        if len(classes) < 2:
            raise ValueError("attack key 'target: shift' needs at least two distinct answers")
        nxt = {c: classes[(i + 1) % len(classes)] for i, c in enumerate(classes)}
        return [s.replace(answer=nxt[s.answer], aliases=[]) for s in samples]

    def loss(self, view) -> torch.Tensor:
        """(B,) l_joint of the view's current inputs (x + delta with the triggers inserted)."""
        logits, _ = view.forward()
        return self.joint(losses.l_train(logits, view.labels, reduction="none"), None)

    def joint(self, l_train: torch.Tensor, l_bind: Optional[torch.Tensor]) -> torch.Tensor:
        p = self.params
        maximize = self.maximize and p.target is None  # a targeted objective always pulls towards its target
        return losses.joint(l_train, l_bind, p.lambda_train, getattr(p, "lambda_bind", 0.0), maximize)

    def hyperparameters(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.params)
