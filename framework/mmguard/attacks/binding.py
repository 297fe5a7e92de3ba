"""Binding attacks: l_joint = +-lambda_train * l_train + lambda_bind * l_bind (METHOD.md, "Cross-modal binding
disruption"), where l_bind reads attention rows of the first |K| language-model layers.

A binding attack says which query rows of each sample it needs (``tap_rows``) and what loss it makes of them
(``binding``); the base taps exactly those rows in exactly those layers during the forward pass that gives
l_train, so one pass serves both terms.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

import torch

from mmguard.attacks import losses
from mmguard.attacks.base import Attack
from mmguard.core.params import NonNegativeFloat, PositiveInt
from mmguard.models.base import Encoded


class BindingAttack(Attack):
    text = True

    @dataclasses.dataclass
    class Params(Attack.Params):
        lambda_bind: NonNegativeFloat = 1.0
        num_layers: PositiveInt = 1     # |K|: the first |K| language-model layers (the paper found 1 best)

    @property
    def tapped_layers(self) -> List[int]:
        return list(range(self.params.num_layers))

    def check_surrogate(self, name: str, language_layers: int) -> Optional[str]:
        if self.params.num_layers > language_layers:
            return f"num_layers {self.params.num_layers} exceeds the {language_layers} language-model layers of {name}"
        return None

    def tap_rows(self, encoded: Encoded) -> torch.Tensor:
        """The sequence positions whose attention rows ``binding`` reads."""
        raise NotImplementedError(f"attack '{self.name}' must say which attention rows it reads")

    def binding(self, view, taps) -> torch.Tensor:
        """(B,) l_bind from the tapped rows (``taps[k].probs[b]``: heads x rows x keys of layer k, sample b)."""
        raise NotImplementedError(f"attack '{self.name}' must define its binding loss")

    def loss(self, view) -> torch.Tensor:
        logits, taps = view.forward(rows=[self.tap_rows(e) for e in view.encoded])
        l_tr = losses.l_train(logits, view.labels, reduction="none")
        return self.joint(l_tr, self.binding(view, taps).to(l_tr.device))
