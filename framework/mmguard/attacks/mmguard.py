"""MMGuard: multimodal error-minimizing protection with cross-modal binding disruption (METHOD.md).

``mmguard_bph`` hijacks the bridge path (answer -> trigger -> perturbation tokens), ``mmguard_crs`` shifts the
answer's attention away from where it goes on clean inputs; the ``_max`` variants maximize l_train.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated

import torch

from mmguard.attacks import losses
from mmguard.attacks.binding import BindingAttack
from mmguard.core.params import NonNegativeFloat, between
from mmguard.core.registry import ATTACKS
from mmguard.models.base import Encoded


@ATTACKS.register("mmguard_bph")
class MMGuardBPH(BindingAttack):
    """BPH: l_bind = b1 l_mass(G, D) + b2 l_mass(Y, G) + b3 l_mass(Y, D), D the top ceil(tau |X|) image tokens
    by mean |delta| over their patches."""

    name = "mmguard_bph"

    @dataclasses.dataclass
    class Params(BindingAttack.Params):
        tau: Annotated[float, between(0, 1, lo_open=True)] = 0.5
        beta1: NonNegativeFloat = 1.0
        beta2: NonNegativeFloat = 1.0
        beta3: NonNegativeFloat = 1.0

    def tap_rows(self, encoded: Encoded) -> torch.Tensor:
        return losses.span_positions(encoded.spans, "G", "Y")

    def binding(self, view, taps) -> torch.Tensor:
        p, layers = self.params, view.layers
        out = []
        for b, e in enumerate(view.encoded):
            n_g = e.spans["G"].numel()
            abar_g = losses.source_abars(taps, layers, b, slice(0, n_g)) if n_g else None
            abar_y = losses.source_abars(taps, layers, b, slice(n_g, None))
            delta = view.deltas[b] if view.deltas is not None else None
            out.append(losses.bph(abar_g, abar_y, self.perturbation_positions(view.adapter, e, delta), e.spans["G"],
                                  (p.beta1, p.beta2, p.beta3)))
        return torch.stack(out)

    def perturbation_positions(self, adapter, encoded: Encoded, delta) -> torch.Tensor:
        """D as sequence positions (all image tokens when nothing is perturbed yet)."""
        x = encoded.spans["X"]
        if delta is None or x.numel() == 0:
            return x
        scores = adapter.token_patch_means(delta.detach().abs(), encoded.layout)
        return x[losses.perturbation_tokens(scores.cpu(), self.params.tau)]


@ATTACKS.register("mmguard_crs")
class MMGuardCRS(BindingAttack):
    """CRS: l_bind = -mean_k KL(stopgrad(Abar_k^clean(Y)) || Abar_k^prot(Y)), keys paired by role."""

    name = "mmguard_crs"

    def tap_rows(self, encoded: Encoded) -> torch.Tensor:
        return encoded.spans["Y"]

    def binding(self, view, taps) -> torch.Tensor:
        clean = view.clean
        if clean is None:
            raise ValueError("CRS needs the batch's clean pass (the loop gives every view one)")
        clean_taps = clean.taps(self.tap_rows)
        out = []
        for b, (ec, ep) in enumerate(zip(clean.encoded, view.encoded)):
            idx_c, idx_p = losses.align_keys(ec.spans, ep.spans, int(clean.lengths[b]), int(view.lengths[b]))
            out.append(losses.crs(losses.source_abars(clean_taps, view.layers, b, slice(None)),
                                  losses.source_abars(taps, view.layers, b, slice(None)), idx_c, idx_p))
        return torch.stack(out)


@ATTACKS.register("mmguard_bph_max")
class MMGuardBPHMax(MMGuardBPH):
    name = "mmguard_bph_max"
    maximize = True


@ATTACKS.register("mmguard_crs_max")
class MMGuardCRSMax(MMGuardCRS):
    name = "mmguard_crs_max"
    maximize = True
