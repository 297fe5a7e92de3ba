"""Cached, left-padded greedy generation against the uncached loop it replaced, for every tiny family.

``reference_generate`` is the previous ``LVLMAdapter.generate``, kept line for line: it re-runs the whole prompt for
every new token and batches only prompts of equal length and image size, so no padding ever enters the model.
The new one must produce the very same strings on a batch that mixes prompt lengths and image sizes.
"""
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from mmguard.core.registry import MODELS
from mmguard.data.synthetic import answer_vocabulary, generate
from mmguard.models import build_model

BASE = [n for n in MODELS.names("tiny-*") if not n.endswith("-wide")]
SIZES = ((32, 32), (56, 40), (32, 48))  # (width, height): several layouts (tiles, grids) in one batch
_TAUGHT: Dict[str, Tuple] = {}


@torch.no_grad()
def reference_generate(adapter, samples, max_new_tokens: int = 8, batch_size: int = 32) -> List[str]:
    """The previous generate: greedy, no KV cache, one group per (prompt length, image size)."""
    self = adapter
    was_training = self.model.training
    self.model.eval()
    encs = [self.encode(s, with_answer=False) for s in samples]
    outputs: List[str] = [""] * len(samples)
    groups: Dict[Tuple, List[int]] = {}
    for i, (e, s) in enumerate(zip(encs, samples)):
        groups.setdefault((len(e), tuple(s.pil.size)), []).append(i)
    stop = set(self.stop_ids())
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            idx = members[start:start + batch_size]
            ids = torch.stack([encs[i].input_ids for i in idx]).to(self.device)
            pixel_inputs = self.to_device(self.process([samples[i].pixels() for i in idx]))
            answer_start = torch.tensor([encs[i].answer_start for i in idx])
            done = torch.zeros(len(idx), dtype=torch.bool)
            new_tokens: List[torch.Tensor] = []
            for _ in range(max_new_tokens):
                mask = torch.ones_like(ids)
                extra = self.to_device(self.extra_token_inputs(ids.cpu(), mask.cpu(), answer_start))
                logits = self.model(input_ids=ids, attention_mask=mask, **extra, **pixel_inputs,
                                    use_cache=False).logits[:, -1]
                nxt = logits.argmax(-1)
                new_tokens.append(nxt.cpu())
                done |= torch.tensor([int(t) in stop for t in nxt.cpu()])
                ids = torch.cat([ids, nxt[:, None]], dim=1)
                if bool(done.all()):
                    break
            gen = torch.stack(new_tokens, 1)
            for row, i in enumerate(idx):
                toks = []
                for t in gen[row].tolist():
                    if t in stop:
                        break
                    toks.append(t)
                outputs[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
    self.model.train(was_training)
    return outputs


def mixed_samples(n: int = 12):
    """Four question types (prompt lengths differ) crossed with three image sizes."""
    samples = generate(n, seed=3, types=("colour", "count", "position", "colour_choice"))
    return [s.replace(image=s.pil.resize(SIZES[i % len(SIZES)])) for i, s in enumerate(samples)]


def teach(adapter, samples, steps: int = 60, lr: float = 3e-3) -> None:
    """Fine-tune every weight a few steps (Adam, one batch of all ``samples``) towards their answers."""
    batch = adapter.collate([adapter.encode(s) for s in samples], [s.pixels() for s in samples])
    opt = torch.optim.Adam(adapter.model.parameters(), lr=lr)
    adapter.model.train()
    for _ in range(steps):
        logits = adapter.forward(batch)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    adapter.model.eval()


def taught(name):
    """(adapter, samples, reference outputs), built once per family."""
    if name not in _TAUGHT:
        adapter = build_model(name, seed=0)
        samples = mixed_samples()
        # a random five-word answer per sample (taught at 32x32): the model then emits multi-token answers that
        # depend on the image, not the one token a random-init model tends to repeat
        rng = np.random.default_rng(0)
        words = answer_vocabulary()
        teach(adapter, [s.replace(answer=" ".join(rng.choice(words, 5)), image=s.pil.resize((32, 32)))
                        for s in samples])
        _TAUGHT[name] = adapter, samples, reference_generate(adapter, samples)
    return _TAUGHT[name]


@pytest.mark.parametrize("batch_size", [32, 5])
@pytest.mark.parametrize("name", BASE)
def test_cached_generate_matches_uncached(name, batch_size):
    adapter, samples, expected = taught(name)
    assert len({len(adapter.encode(s, with_answer=False)) for s in samples}) >= 3, "prompt lengths must differ"
    assert len(set(expected)) >= 4, f"{name}: the taught model's outputs barely vary: {expected}"
    assert sum(len(o.split()) >= 2 for o in expected) >= 4, f"{name}: too few multi-token outputs: {expected}"
    adapter.model.train()
    assert adapter.generate(samples, max_new_tokens=8, batch_size=batch_size) == expected
    assert adapter.model.training  # the mode is restored


@pytest.mark.parametrize("name", BASE)
def test_token_budget_cuts_as_before(name):
    adapter, samples, _ = taught(name)
    assert adapter.generate(samples, max_new_tokens=3) == reference_generate(adapter, samples, max_new_tokens=3)


def test_checkpoint_generation_defaults_are_ignored():
    """Real checkpoints ship sampling defaults and repetition penalties; greedy stays plain argmax."""
    adapter, samples, expected = taught("tiny-llava")
    assert any(len(set(o.split())) < len(o.split()) for o in expected), "needs an output with a repeated word"
    shipped = GenerationConfig(do_sample=True, temperature=0.7, top_k=20, repetition_penalty=1.5,
                               no_repeat_ngram_size=1, eos_token_id=adapter.tokenizer.eos_token_id)
    saved, adapter.model.generation_config = adapter.model.generation_config, shipped
    try:
        assert adapter.generate(samples) == expected
        assert adapter.model.generation_config is shipped
    finally:
        adapter.model.generation_config = saved
