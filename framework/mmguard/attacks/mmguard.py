"""MMGuard: multimodal error-minimizing protection with cross-modal binding disruption (METHOD.md).

``mmguard_bph`` hijacks the bridge path (answer -> trigger -> perturbation tokens), ``mmguard_crs`` shifts the
answer's attention away from where it goes on clean inputs; the ``_max`` variants maximize l_train.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Dict, List, Optional

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

    @dataclasses.dataclass
    class Params(BindingAttack.Params):
        tau: Annotated[float, between(0, 1, lo_open=True)] = 0.5
        beta1: NonNegativeFloat = 1.0
        beta2: NonNegativeFloat = 1.0
        beta3: NonNegativeFloat = 1.0

    def tap_rows(self, encoded: Encoded) -> torch.Tensor:
        return losses.span_positions(encoded.spans, "G", "Y")

    def binding(self, view, taps) -> torch.Tensor:
        p, enc = self.params, view.encoded
        n_g = torch.tensor([e.spans["G"].numel() for e in enc])
        first = taps[view.layers[0]]
        rows = torch.arange(first.batched.shape[2])[None]
        g_rows, y_rows = rows < n_g[:, None], (rows >= n_g[:, None]) & first.row_mask.cpu()
        device, keys = first.batched.device, first.batched.shape[-1]
        abar_g = [losses.masked_abar(taps[k].batched, g_rows.to(device)) for k in view.layers]
        abar_y = [losses.masked_abar(taps[k].batched, y_rows.to(device)) for k in view.layers]
        d_mask = losses.key_mask(self.perturbation_positions(view), keys, device)
        g_mask = losses.key_mask([e.spans["G"] for e in enc], keys, device)
        return losses.bph_batched(abar_g, abar_y, d_mask, g_mask, (p.beta1, p.beta2, p.beta3))

    def perturbation_positions(self, view) -> List[torch.Tensor]:
        """D of every sample as sequence positions (all image tokens when nothing is perturbed yet); the scores
        of the samples that share a layout are computed together."""
        enc = view.encoded
        if view.deltas is None:
            return [e.spans["X"] for e in enc]
        out: List[Optional[torch.Tensor]] = [None] * len(enc)
        groups: Dict[tuple, List[int]] = {}
        for b, e in enumerate(enc):
            groups.setdefault((tuple(view.deltas[b].shape), repr(e.layout)), []).append(b)
        for members in groups.values():
            e = enc[members[0]]
            if e.spans["X"].numel() == 0:
                for b in members:
                    out[b] = enc[b].spans["X"]
                continue
            deltas = torch.stack([view.deltas[b].detach().abs() for b in members])
            scores = view.adapter.token_patch_means(deltas, e.layout)
            chosen = losses.perturbation_tokens_batched(scores.cpu(), self.params.tau)
            for row, b in enumerate(members):
                out[b] = enc[b].spans["X"][chosen[row]]
        return out  # type: ignore[return-value]


@ATTACKS.register("mmguard_crs")
class MMGuardCRS(BindingAttack):
    """CRS: l_bind = -mean_k KL(stopgrad(Abar_k^clean(Y)) || Abar_k^prot(Y)), keys paired by role."""

    def tap_rows(self, encoded: Encoded) -> torch.Tensor:
        return encoded.spans["Y"]

    def binding(self, view, taps) -> torch.Tensor:
        clean = view.clean
        if clean is None:
            raise ValueError("CRS needs the batch's clean pass (the loop gives every view one)")
        clean_taps = clean.taps(self.tap_rows)
        if "crs_index" not in view.cache:  # the pairing of keys depends on the encodings only
            pairs = [losses.align_keys(ec.spans, ep.spans, int(clean.lengths[b]), int(view.lengths[b]))
                     for b, (ec, ep) in enumerate(zip(clean.encoded, view.encoded))]
            view.cache["crs_index"] = losses.aligned_index(pairs, taps[view.layers[0]].batched.device)
        idx_c, idx_p, mask = view.cache["crs_index"]
        abar_c = [losses.masked_abar(clean_taps[k].batched, clean_taps[k].row_mask) for k in view.layers]
        abar_p = [losses.masked_abar(taps[k].batched, taps[k].row_mask) for k in view.layers]
        return losses.crs_batched(abar_c, abar_p, idx_c, idx_p, mask)


@ATTACKS.register("mmguard_bph_max")
class MMGuardBPHMax(MMGuardBPH):
    maximize = True


@ATTACKS.register("mmguard_crs_max")
class MMGuardCRSMax(MMGuardCRS):
    maximize = True
