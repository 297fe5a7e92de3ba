"""The protection losses of METHOD.md as pure functions of tensors: l_train, attention-mass terms, BPH, CRS.

Attention inputs are per-sample. ``Abar`` is one (keys,) distribution (mean over heads and source rows of the
attention rows an ``LVLMAdapter.attention_rows`` tap captured); a "per-layer" argument is a list with one
``Abar`` per layer k in K. Key indices are positions in that sample's (possibly right-padded) sequence; padded
keys carry zero mass, so padding never changes a loss.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from mmguard.models.base import AnswerLogits

EPS = 1e-12


# ----------------------------------------------------------------------------- training loss
def l_train(logits, labels: Optional[torch.Tensor] = None, reduction: str = "sample_sum") -> torch.Tensor:
    """Autoregressive NLL of the labelled (answer) tokens: ``logits`` either full (B, L, V) with ``labels``
    unshifted and -100 elsewhere, or an ``AnswerLogits`` (the answer's logits alone; ``labels`` unused).

    ``sample_sum`` (METHOD.md): mean over samples of the per-sample sum; ``token_mean``: mean over all labelled
    tokens of the batch (what a fine-tuner minimizes); ``sample_mean``: (B,) each sample's mean over its own
    answer tokens (UEraser's per-sample loss); ``none``: the per-sample sums, (B,) (what HotFlip ranks).
    """
    if reduction not in ("sample_sum", "token_mean", "sample_mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; known: sample_sum, token_mean, sample_mean, none")
    answers = logits if isinstance(logits, AnswerLogits) else AnswerLogits.select(logits, labels)
    nll = F.cross_entropy(answers.logits.float(), answers.targets, reduction="none")  # (N,)
    if reduction == "token_mean":
        return nll.mean() if nll.numel() else nll.sum()
    per_sample = nll.new_zeros(answers.batch_size).index_add(0, answers.sample, nll)
    if reduction == "sample_mean":
        counts = torch.bincount(answers.sample, minlength=answers.batch_size).to(nll.dtype)
        return per_sample / counts.clamp(min=1)
    if reduction == "none":
        return per_sample
    return per_sample.mean()


# ----------------------------------------------------------------------------- attention mass
def mean_attention(probs: torch.Tensor) -> torch.Tensor:
    """(heads, rows, keys) attention rows -> Abar (keys,), the mean over heads and rows."""
    if probs.dim() != 3 or probs.shape[1] == 0:
        raise ValueError(f"need (heads, rows>0, keys) attention, got {tuple(probs.shape)}")
    return probs.float().mean(dim=(0, 1))


def source_abars(taps: Mapping[int, object], layers: Sequence[int], b: int, select) -> Optional[list]:
    """Per-layer Abar of batch element ``b`` over the tapped rows ``select`` (a slice or index tensor into the
    rows that were requested for ``b``); None when the selection is empty (e.g. no trigger)."""
    out = []
    for k in layers:
        probs = taps[k].probs[b][:, select]
        if probs.shape[1] == 0:
            return None
        out.append(mean_attention(probs))
    return out


def uniform_on(indices: torch.Tensor, length: int, device=None) -> torch.Tensor:
    """U_R: the uniform distribution over the key positions ``indices`` among ``length`` keys."""
    u = torch.zeros(length, device=device)
    indices = torch.as_tensor(indices, dtype=torch.long, device=u.device)
    if indices.numel():
        u[indices] = 1.0 / indices.numel()
    return u


def l_mass(abar: torch.Tensor, target_indices: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """KL(U_R || Abar) = -log|R| - mean_{r in R} log Abar[r]: 0 iff Abar is uniform on R, growing as mass
    leaves R or spreads unevenly inside it. U_R is zero off R, so only the target keys enter the sum."""
    target = torch.as_tensor(target_indices, dtype=torch.long, device=abar.device)
    if target.numel() == 0:
        return abar.new_zeros(())
    return -math.log(target.numel()) - abar[target].clamp_min(eps).log().mean()


def l_mass_layers(abars: Sequence[torch.Tensor], target_indices: torch.Tensor,
                  eps: float = EPS) -> torch.Tensor:
    """l_mass(S, R) of METHOD.md: the mean over layers k in K of KL(U_R || Abar_k(S))."""
    return torch.stack([l_mass(a, target_indices, eps) for a in abars]).mean()


def perturbation_tokens(token_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """D: the top ceil(tau * |X|) image tokens by score (mean |delta| over each token's patch), ties broken by
    the lower index; returned ascending, as indices into X (index ``spans["X"]`` with them for positions)."""
    scores = torch.as_tensor(token_scores).detach().float().flatten().cpu()
    n = scores.numel()
    k = min(n, max(0, math.ceil(tau * n - 1e-9)))  # the tolerance keeps 0.3 * 10 at 3, not 4
    # a stable ascending sort of -score keeps equal scores in index order
    order = torch.sort(-scores.nan_to_num(nan=-math.inf), stable=True).indices
    return order[:k].sort().values


# ----------------------------------------------------------------------------- BPH
def bph(abar_G: Optional[Sequence[torch.Tensor]], abar_Y: Sequence[torch.Tensor], D_pos: torch.Tensor,
        G_pos: torch.Tensor, betas: Tuple[float, float, float] = (1.0, 1.0, 1.0),
        eps: float = EPS) -> torch.Tensor:
    """Bridge path hijack: b1 * l_mass(G, D) + b2 * l_mass(Y, G) + b3 * l_mass(Y, D).

    Without a trigger (``abar_G`` None or ``G_pos`` empty) the two terms that need G are skipped rather than
    given a made-up value, so the image-only ablation still optimizes Y -> D.
    """
    b1, b2, b3 = betas
    loss = b3 * l_mass_layers(abar_Y, D_pos, eps)
    if abar_G is not None and torch.as_tensor(G_pos).numel() > 0:
        loss = loss + b1 * l_mass_layers(abar_G, D_pos, eps) + b2 * l_mass_layers(abar_Y, G_pos, eps)
    return loss


# ----------------------------------------------------------------------------- CRS
def align_keys(spans_clean: Mapping[str, torch.Tensor], spans_prot: Mapping[str, torch.Tensor],
               len_clean: int, len_prot: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pair the key positions of the clean and the protected sequence of one sample, by token role.

    The two differ only inside the question region (T and G tokens). Keys before the region (template, image
    tokens X) pair by offset from the start; keys after it (template, answer Y, end token) pair by offset from
    the region's end; question tokens T pair by their order among T (trigger insertion skips G, never
    replaces T). Trigger keys, and any T token a BPE merge across the trigger boundary left unpaired, stay
    unpaired: ``crs`` merges all unpaired keys of each pass into one extra bucket, where the clean pass has
    (almost) no mass, so routing attention onto the trigger raises the divergence instead of being hidden
    by a renormalization. Returns (clean positions, protected positions), equal length, ascending.
    """
    def region(spans, length):
        q = torch.cat([torch.as_tensor(spans.get("T", [])), torch.as_tensor(spans.get("G", []))]).long()
        return (int(q.min()), int(q.max()) + 1) if q.numel() else (length, length)

    (c0, c1), (p0, p1) = region(spans_clean, len_clean), region(spans_prot, len_prot)
    n_pre = min(c0, p0)
    n_post = min(len_clean - c1, len_prot - p1)
    t_c = torch.as_tensor(spans_clean.get("T", [])).long()
    t_p = torch.as_tensor(spans_prot.get("T", [])).long()
    n_t = min(t_c.numel(), t_p.numel())
    idx_c = torch.cat([torch.arange(n_pre), t_c[:n_t], torch.arange(c1, c1 + n_post)])
    idx_p = torch.cat([torch.arange(n_pre), t_p[:n_t], torch.arange(p1, p1 + n_post)])
    return idx_c, idx_p


def _kl_aligned(p_clean: torch.Tensor, p_prot: torch.Tensor, idx_c: torch.Tensor, idx_p: torch.Tensor,
                eps: float) -> torch.Tensor:
    pc, pp = p_clean[idx_c.to(p_clean.device)], p_prot[idx_p.to(p_prot.device)]
    # the unpaired keys of each pass form one bucket, so both sides stay distributions summing to 1
    pc = torch.cat([pc, (p_clean.sum() - pc.sum()).clamp_min(0)[None]])
    pp = torch.cat([pp, (p_prot.sum() - pp.sum()).clamp_min(0)[None]])
    return (torch.xlogy(pc, pc) - pc * pp.clamp_min(eps).log()).sum()


def crs(abar_Y_clean: Sequence[torch.Tensor], abar_Y_prot: Sequence[torch.Tensor], idx_clean: torch.Tensor,
        idx_prot: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Contrastive routing shift: -mean_k KL(stopgrad(Abar_k^clean(Y)) || Abar_k^prot(Y)) over the keys paired
    by ``align_keys`` (plus the unpaired bucket). 0 when both passes route alike, negative otherwise."""
    kls = [_kl_aligned(c.detach(), p, idx_clean, idx_prot, eps) for c, p in zip(abar_Y_clean, abar_Y_prot)]
    return -torch.stack(kls).mean()


# ----------------------------------------------------------------------------- batched forms
# The attacks compute the terms above for a whole batch at once: attention rows padded to (B, H, R, keys) with a
# row mask, target key sets as (B, keys) masks. Each equals the per-sample function it mirrors (tested).
def masked_abar(probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, H, R, K) attention rows and a (B, R) mask of the source rows -> Abar (B, K), the mean over heads and
    the masked rows (zero where a sample has no source row)."""
    weights = rows.to(probs.dtype)
    total = (probs * weights[:, None, :, None]).sum(dim=(1, 2))
    return total / (probs.shape[1] * weights.sum(1, keepdim=True)).clamp_min(1)


def key_mask(positions: Sequence[torch.Tensor], length: int, device=None) -> torch.Tensor:
    """(B, length) True at each sample's ``positions``."""
    mask = torch.zeros(len(positions), length, dtype=torch.bool, device=device)
    for b, p in enumerate(positions):
        if torch.as_tensor(p).numel():
            mask[b, torch.as_tensor(p, dtype=torch.long, device=mask.device)] = True
    return mask


def l_mass_batched(abar: torch.Tensor, targets: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B,) KL(U_R || Abar) per sample with R given as a (B, K) mask; 0 where R is empty (as ``l_mass``)."""
    n = targets.sum(1).to(abar.dtype)
    logs = (abar.clamp_min(eps).log() * targets.to(abar.dtype)).sum(1)
    value = -torch.log(n.clamp_min(1)) - logs / n.clamp_min(1)
    return torch.where(n > 0, value, torch.zeros_like(value))


def bph_batched(abar_g: Sequence[torch.Tensor], abar_y: Sequence[torch.Tensor], d_mask: torch.Tensor,
                g_mask: torch.Tensor, betas: Tuple[float, float, float] = (1.0, 1.0, 1.0),
                eps: float = EPS) -> torch.Tensor:
    """(B,) ``bph`` for a batch: per layer Abar (B, K) of the trigger and answer rows, D and G as key masks;
    the terms that need a trigger are left out for samples without one."""
    b1, b2, b3 = betas
    has_g = g_mask.any(1).to(abar_y[0].dtype)
    per_layer = [b3 * l_mass_batched(y, d_mask, eps) + has_g * (b1 * l_mass_batched(g, d_mask, eps)
                                                               + b2 * l_mass_batched(y, g_mask, eps))
                 for g, y in zip(abar_g, abar_y)]
    return torch.stack(per_layer).mean(0)


def aligned_index(pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]], device=None
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``align_keys`` results of a batch padded to (B, M): clean positions, protected positions, and a mask."""
    width = max(1, max((int(c.numel()) for c, _ in pairs), default=1))
    idx_c = torch.zeros(len(pairs), width, dtype=torch.long)
    idx_p = torch.zeros(len(pairs), width, dtype=torch.long)
    mask = torch.zeros(len(pairs), width, dtype=torch.bool)
    for b, (c, p) in enumerate(pairs):
        idx_c[b, : c.numel()], idx_p[b, : p.numel()], mask[b, : c.numel()] = c, p, True
    return idx_c.to(device), idx_p.to(device), mask.to(device)


def crs_batched(abar_clean: Sequence[torch.Tensor], abar_prot: Sequence[torch.Tensor], idx_c: torch.Tensor,
                idx_p: torch.Tensor, mask: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """(B,) ``crs`` for a batch: per layer Abar (B, Kc) of the clean pass and (B, Kp) of the protected pass,
    keys paired by the padded ``aligned_index``."""
    kls = []
    for c, p in zip(abar_clean, abar_prot):
        c = c.detach()
        m = mask.to(c.dtype)
        pc, pp = c.gather(1, idx_c) * m, p.gather(1, idx_p) * m
        bucket_c = (c.sum(1) - pc.sum(1)).clamp_min(0)
        bucket_p = (p.sum(1) - pp.sum(1)).clamp_min(0)
        kl = (torch.xlogy(pc, pc) - pc * pp.clamp_min(eps).log()).sum(1)
        kls.append(kl + torch.xlogy(bucket_c, bucket_c) - bucket_c * bucket_p.clamp_min(eps).log())
    return -torch.stack(kls).mean(0)


def perturbation_tokens_batched(token_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``perturbation_tokens`` for a (B, X) batch of scores (one layout): (B, k) indices into X, ascending."""
    scores = token_scores.detach().float()
    k = min(scores.shape[1], max(0, math.ceil(tau * scores.shape[1] - 1e-9)))
    order = torch.sort(-scores.nan_to_num(nan=-math.inf), dim=1, stable=True).indices
    return order[:, :k].sort(dim=1).values


# ----------------------------------------------------------------------------- joint
def joint(l_train: torch.Tensor, l_bind: Optional[torch.Tensor], lambda_train: float = 1.0,
          lambda_bind: float = 1.0, maximize: bool = False) -> torch.Tensor:
    """l_joint = +-lambda_train * l_train + lambda_bind * l_bind; ``maximize`` gives the -Max variants."""
    loss = (-lambda_train if maximize else lambda_train) * l_train
    return loss if l_bind is None else loss + lambda_bind * l_bind


def span_positions(spans: Dict[str, torch.Tensor], *names: str) -> torch.Tensor:
    """The positions of several spans concatenated in the order given (e.g. the tap rows G then Y)."""
    if not names:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([torch.as_tensor(spans[n]).long() for n in names])
