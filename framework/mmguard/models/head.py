"""The LM head's input during generation (a memory trap of reduced-precision CPU matmuls)."""
from __future__ import annotations

import torch

REDUCED_FLOATS = (torch.bfloat16, torch.float16)


def contiguous_head_input(module, args):
    """Forward pre-hook of the LM head during generation: a reduced-precision (bf16/fp16) hidden state goes in
    contiguous. Generation's prefill slices the last position (``logits_to_keep=1``), a (B, 1, H) view with the
    prompt's stride, which ``torch.matmul`` cannot fold into one (B, H) x (H, V) product when the head's weight
    does not require grad (a frozen head: every victim's); it then broadcasts the weight to (B, H, V) and the CPU
    bf16 ``bmm`` copies that: B copies of the head (335 MB each for Gemma 3's 262k vocabulary), 21 GB for a
    batch of 64, and 20-30x slower. A float32 input is left as it is (float32 ``bmm`` reads the broadcast in place)."""
    x = args[0] if args else None
    if torch.is_tensor(x) and x.dim() >= 3 and x.dtype in REDUCED_FLOATS and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None
