"""l_prot for one surrogate: l_joint = +-lambda_train * l_train + lambda_bind * l_bind (METHOD.md), per sample.

Pure composition of the adapter face (encode, collate, forward, attention_rows, token_patch_means) and the
loss functions; no Lightning here. Per-sample values (B,) so that HotFlip verification can rank candidates
sample by sample; PGD uses their mean.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from mmguard.attacks import losses
from mmguard.data.sample import Sample


def _d_positions(adapter, enc, delta: Optional[torch.Tensor], tau: float) -> torch.Tensor:
    """Perturbation tokens D: the top ceil(tau |X|) image tokens by mean |delta| over the patch each covers."""
    x = enc.spans["X"]
    if delta is None or x.numel() == 0:
        return x
    scores = adapter.token_patch_means(delta.detach().abs(), enc.layout)
    return x[losses.perturbation_tokens(scores.cpu(), tau)]


def joint_per_sample(adapter, attack, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
                     images: Sequence[torch.Tensor], deltas: Optional[Sequence[torch.Tensor]] = None,
                     clean_images: Optional[Sequence[torch.Tensor]] = None, encoded=None) -> torch.Tensor:
    """(B,) l_joint of the protected inputs ``images`` (x + delta, differentiable) with ``triggers`` inserted."""
    cfg = attack.cfg
    maximize = attack.maximize and cfg.target is None  # a targeted objective always pulls towards its target
    encoded = encoded or [adapter.encode(s, trigger=t) for s, t in zip(samples, triggers)]
    batch = adapter.to_device(adapter.collate(encoded, images))
    layers = list(range(min(cfg.num_layers, len(adapter.attention_modules))))
    if attack.binding is None:
        l_tr = losses.l_train(adapter.forward(batch), batch["labels"], reduction="none")
        return losses.joint(l_tr, None, cfg.lambda_train, cfg.lambda_bind, maximize)

    if attack.binding == "bph":
        rows = [losses.span_positions(e.spans, "G", "Y") for e in encoded]
        with adapter.attention_rows(layers, rows) as taps:
            l_tr = losses.l_train(adapter.forward(batch), batch["labels"], reduction="none")
        binds: List[torch.Tensor] = []
        for b, e in enumerate(encoded):
            n_g = e.spans["G"].numel()
            abar_g = losses.source_abars(taps, layers, b, slice(0, n_g)) if n_g else None
            abar_y = losses.source_abars(taps, layers, b, slice(n_g, None))
            d_pos = _d_positions(adapter, e, deltas[b] if deltas is not None else None, cfg.tau)
            binds.append(losses.bph(abar_g, abar_y, d_pos, e.spans["G"], (cfg.beta1, cfg.beta2, cfg.beta3)))
        return losses.joint(l_tr, torch.stack(binds).to(l_tr.device), cfg.lambda_train, cfg.lambda_bind,
                            maximize)

    if attack.binding == "crs":
        if clean_images is None:
            raise ValueError("CRS needs the clean images for its reference pass")
        clean_enc = [adapter.encode(s) for s in samples]
        clean_batch = adapter.to_device(adapter.collate(clean_enc, [c.detach() for c in clean_images]))
        with torch.no_grad(), adapter.attention_rows(layers, [e.spans["Y"] for e in clean_enc]) as clean_taps:
            adapter.forward(clean_batch)
        with adapter.attention_rows(layers, [e.spans["Y"] for e in encoded]) as taps:
            l_tr = losses.l_train(adapter.forward(batch), batch["labels"], reduction="none")
        binds = []
        for b, (ec, ep) in enumerate(zip(clean_enc, encoded)):
            idx_c, idx_p = losses.align_keys(ec.spans, ep.spans, int(clean_batch["attention_mask"][b].sum()),
                                             int(batch["attention_mask"][b].sum()))
            binds.append(losses.crs(losses.source_abars(clean_taps, layers, b, slice(None)),
                                    losses.source_abars(taps, layers, b, slice(None)), idx_c, idx_p))
        return losses.joint(l_tr, torch.stack(binds).to(l_tr.device), cfg.lambda_train, cfg.lambda_bind,
                            maximize)
    raise ValueError(f"attack '{attack.name}': unknown binding '{attack.binding}' (bph or crs)")


def answer_accuracy(adapter, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
                    images: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B,) 1.0 where teacher-forced argmax predicts every answer token: the stop rule's train accuracy."""
    encoded = [adapter.encode(s, trigger=t) for s, t in zip(samples, triggers)]
    batch = adapter.to_device(adapter.collate(encoded, images))
    with torch.no_grad():
        logits = adapter.forward(batch)
    pred, labels = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    mask = labels != -100
    return ((pred == labels) | ~mask).all(1).float().cpu()
