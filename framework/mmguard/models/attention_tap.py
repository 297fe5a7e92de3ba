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
    """Rows to capture for each batch element; filled with one (heads, rows, keys) tensor per element."""

    def __init__(self, rows: Sequence[torch.Tensor]):
        self.rows = [torch.as_tensor(r, dtype=torch.long) for r in rows]
        self.probs: List[torch.Tensor] = []


def _row_probs(module, query, key, attention_mask, scaling, softcap, rows: torch.Tensor, b: int) -> torch.Tensor:
    q = query[b, :, rows.to(query.device)]  # (H, R, D)
    groups = getattr(module, "num_key_value_groups", 1)
    k = repeat_kv(key[b:b + 1], groups)[0] if groups > 1 else key[b]
    scores = torch.matmul(q, k.transpose(-1, -2)) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    kv_len = k.shape[-2]
    if attention_mask is None:  # SDPA skipped the mask: plain causal over the full sequence
        q_pos = rows.to(query.device) + (kv_len - query.shape[2])
        allowed = torch.arange(kv_len, device=query.device)[None, :] <= q_pos[:, None]
        scores = scores.masked_fill(~allowed[None], torch.finfo(scores.dtype).min)
    else:
        m = attention_mask[b if attention_mask.shape[0] > 1 else 0]
        m = m[0 if m.shape[0] == 1 else slice(None)]
        m = m[..., rows.to(m.device), :kv_len]
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
        else:
            scores = scores + m
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def tap_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    request: Optional[TapRequest] = getattr(module, "_mmguard_tap", None)
    if request is not None:
        softcap = kwargs.get("softcap")
        request.probs = [
            _row_probs(module, query, key, attention_mask, scaling, softcap, rows, b)
            for b, rows in enumerate(request.rows)
        ]
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
    """Within the block, each forward records ``requests[layer].probs[b]`` = (heads, len(rows[b]), keys)."""
    requests = {k: TapRequest(rows) for k in layers}
    try:
        for k, req in requests.items():
            attention_modules[k]._mmguard_tap = req
        yield requests
    finally:
        for k in requests:
            attention_modules[k]._mmguard_tap = None
