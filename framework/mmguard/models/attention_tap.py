"""Attention probabilities of chosen query rows, without switching the model to eager attention.

We register one attention function, ``mmguard_tap``, with transformers' AttentionInterface. It runs SDPA as
usual; only in a layer that is being tapped does it also compute softmax(q_rows k^T * scale + mask) for the
requested rows, from the very query and key states (rotary and q/k norms already applied) that eager
attention would use. Cost: O(rows x keys) per tapped layer, instead of full eager attention everywhere.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

TAP_NAME = "mmguard_tap"


class TapRequest:
    """Rows to capture for each batch element. The capture is one batched computation: ``batched`` holds
    (B, heads, R, keys) with each element's rows first and padding after (``row_mask``); ``probs[b]`` is element
    b's (heads, rows, keys)."""

    def __init__(self, rows: Sequence[torch.Tensor]):
        self.rows = [torch.as_tensor(r, dtype=torch.long).reshape(-1) for r in rows]
        self.counts = [int(r.numel()) for r in self.rows]
        self.batched: Optional[torch.Tensor] = None
        self._index: Optional[torch.Tensor] = None

    def index(self, device) -> torch.Tensor:
        """(B, R) the requested rows, padded with each element's last requested row (or 0)."""
        if self._index is None or self._index.device != torch.device(device):
            width = max(1, max(self.counts, default=1))
            idx = torch.zeros(len(self.rows), width, dtype=torch.long)
            for b, r in enumerate(self.rows):
                if r.numel():
                    idx[b, : r.numel()] = r
                    idx[b, r.numel():] = r[-1]
            self._index = idx.to(device)
        return self._index

    @property
    def row_mask(self) -> torch.Tensor:
        width = self.batched.shape[2]
        return torch.arange(width, device=self.batched.device)[None] < torch.tensor(
            self.counts, device=self.batched.device)[:, None]

    @property
    def probs(self) -> List[torch.Tensor]:
        return [self.batched[b, :, :n] for b, n in enumerate(self.counts)]


def row_probs(module, query, key, attention_mask, scaling, softcap, index: torch.Tensor) -> torch.Tensor:
    """softmax(q_rows k^T * scale + mask) for the rows ``index`` (B, R) of every batch element: (B, H, R, keys)."""
    b, heads, q_len, dim = query.shape
    q = query.gather(2, index[:, None, :, None].expand(b, heads, index.shape[1], dim))
    groups = getattr(module, "num_key_value_groups", 1)
    k = repeat_kv(key, groups) if groups > 1 else key
    scores = torch.matmul(q, k.transpose(-1, -2)) * (scaling if scaling is not None else dim ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    kv_len = k.shape[-2]
    if attention_mask is None:  # SDPA skipped the mask: plain causal over the full sequence
        q_pos = index + (kv_len - q_len)
        allowed = torch.arange(kv_len, device=query.device)[None, None, :] <= q_pos[:, :, None]
        scores = scores.masked_fill(~allowed[:, None], torch.finfo(scores.dtype).min)
    else:
        m = attention_mask[..., :kv_len]
        m = m.expand(b, m.shape[1], m.shape[2], kv_len)
        m = m.gather(2, index[:, None, :, None].expand(b, m.shape[1], index.shape[1], kv_len))
        scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min) if m.dtype == torch.bool else scores + m
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def tap_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    request: Optional[TapRequest] = getattr(module, "_mmguard_tap", None)
    if request is not None:
        request.batched = row_probs(module, query, key, attention_mask, scaling, kwargs.get("softcap"),
                                    request.index(query.device))
    if kwargs.get("softcap") is not None:  # SDPA cannot softcap: fall back to eager for that layer only
        from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                       scaling=scaling, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


ALL_ATTENTION_FUNCTIONS.register(TAP_NAME, tap_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(TAP_NAME, sdpa_mask)


@contextlib.contextmanager
def tap_rows(attention_modules: Sequence[torch.nn.Module], layers: Sequence[int],
             rows: Sequence[torch.Tensor]) -> Iterator[Dict[int, TapRequest]]:
    """Within the block, each forward records ``requests[layer].probs[b]`` = (heads, len(rows[b]), keys) (and the
    whole batch at once in ``requests[layer].batched``)."""
    requests = {k: TapRequest(rows) for k in layers}
    try:
        for k, req in requests.items():
            attention_modules[k]._mmguard_tap = req
        yield requests
    finally:
        for k in requests:
            attention_modules[k]._mmguard_tap = None
