"""A bf16 fine-tune's evaluation does not copy the LM head once per sample.

The "leak" of a bf16 fine-tune (about 0.3 GB a second until the OOM killer: 21 GB for one 64-sample test batch of
effnet-gemma3-270m) was in the evaluation after the fit: generation's prefill hands the LM head a (B, 1, H) slice
of the prompt's hidden states, and with a frozen bf16 head ``torch.matmul`` broadcasts the weight to (B, H, V)
and the CPU ``bmm`` copies it: B copies of the head (335 MB each for Gemma 3's 262k vocabulary). The tiny models'
head is about 130 kB, so the copies do not show in the process's memory: the test counts them in what
the head's own call allocates (torch's profiler), which grows by one head per sample without the fix.
"""
import pytest
import torch
from helpers import CPU as TRAINER
from torch.profiler import ProfilerActivity, profile

from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.finetune import evaluate, finetune
from mmguard.models import build_model
from mmguard.models.head import contiguous_head_input


def _inside(event):
    """``event`` and every op it called."""
    yield event
    for child in event.cpu_children:
        yield from _inside(child)


def head_allocation(adapter, module, test) -> int:
    """The largest single allocation made inside the LM head's calls while ``test`` is evaluated in one batch."""
    shape = list(adapter.model.get_output_embeddings().weight.shape)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True) as prof:
        evaluate(adapter, test, max_new_tokens=2, batch_size=len(test), trainer=TRAINER, module=module)
    heads = [e for e in prof.events() if e.name == "aten::linear" and len(e.input_shapes) > 1
             and e.input_shapes[1] == shape]
    assert heads, "the LM head ran no aten::linear"
    return max(inner.cpu_memory_usage for e in heads for inner in _inside(e))


@pytest.mark.parametrize("weights,precision", [("bfloat16", "32-true"), ("float32", "bf16-true")])
def test_bf16_evaluation_after_a_fit_does_not_copy_the_head_per_sample(weights, precision):
    adapter = build_model("tiny-llava", seed=0)
    adapter.model.to(getattr(torch, weights))
    train = generate(8, seed=1, types=("colour",), prefix="tr")
    module = finetune(adapter, VICTIMS.build("lora", rank=4, alpha=8, dropout=0.0),
                      FinetuneParams(lr=1e-3, epochs=1, batch_size=4, precision=precision), train, trainer=TRAINER)
    head = adapter.model.get_output_embeddings().weight
    assert head.dtype == torch.bfloat16 and not head.requires_grad  # a frozen bf16 head, as the victims leave it
    one_copy = head.numel() * head.element_size()
    small = head_allocation(adapter, module, generate(2, seed=2, types=("colour",), prefix="te"))
    large = head_allocation(adapter, module, generate(16, seed=2, types=("colour",), prefix="te"))
    # without the fix: 2 and 16 copies of the head; with it, logits of 16 x V alone
    assert large < one_copy, f"the head allocated {large / one_copy:.1f} copies of itself for a batch of 16"
    assert large - small < one_copy


def test_the_head_hook_leaves_float32_and_contiguous_inputs_alone():
    """Float32 inputs pass untouched (their results are bit-identical to before); a strided bf16 one comes back
    contiguous with the same values."""
    hidden = torch.randn(4, 7, 8)
    last = hidden[:, -1:, :]
    assert not last.is_contiguous()
    assert contiguous_head_input(None, (last,)) is None
    assert contiguous_head_input(None, (last.bfloat16().contiguous(),)) is None
    strided = hidden.bfloat16()[:, -1:, :]
    (out,) = contiguous_head_input(None, (strided,))
    assert out.is_contiguous() and torch.equal(out, strided)


def test_generation_removes_its_head_hook():
    adapter = build_model("tiny-llava", seed=0)
    head = adapter.model.get_output_embeddings()
    before = dict(head._forward_pre_hooks)
    adapter.generate(generate(2, seed=2, types=("colour",)), max_new_tokens=2)
    assert dict(head._forward_pre_hooks) == before
