"""Training-step strategies a ``VictimModule`` is given: what one fine-tuning step's loss is.

``StandardStep`` is l_train on the batch as collated. ``AdversarialStep`` (Madry-style adversarial training, a
probe of the adaptive fine-tuner) first moves the raw images to the worst case within ``eps`` by PGD.
``MaxOverCopies`` (UEraser's step) trains on each sample's largest loss over augmented copies of its raw image,
seeded by (seed, epoch, batch index); adversarial training, when on, perturbs each copy.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmguard.attacks.losses import l_train


class StandardStep:
    needs_raw_images = False
    random_pixels = False  # the same raw images always give the same pixel inputs

    def pixels(self, module, batch, raw: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """The pixel inputs of ``raw`` images (default: the batch's own, already collated)."""
        if raw is None:
            return {}
        return module.adapter.to_device(module.adapter.process(raw))

    def __call__(self, module, batch, batch_idx: int) -> torch.Tensor:
        return l_train(module.adapter.answer_logits({**batch, **self.pixels(module, batch)}), reduction="token_mean")


class AdversarialStep(StandardStep):
    """PGD on the raw images inside the loop: ``steps`` signed steps of ``alpha`` within the L-inf ``eps`` ball
    (alpha 0: 2.5 eps / steps), from a uniform start."""

    needs_raw_images = True
    random_pixels = True  # a uniform random start

    def __init__(self, eps: float, steps: int, alpha: float = 0.0):
        self.eps, self.steps = eps, steps
        self.alpha = alpha or 2.5 * eps / max(1, steps)

    def pixels(self, module, batch, raw: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        adapter = module.adapter
        raw = [x.to(module.device) for x in (batch["raw_images"] if raw is None else raw)]
        deltas = [torch.empty_like(x).uniform_(-self.eps, self.eps) for x in raw]
        for _ in range(self.steps):
            deltas = [d.detach().requires_grad_(True) for d in deltas]
            with torch.enable_grad():
                pixels = adapter.process([(x + d).clamp(0, 1) for x, d in zip(raw, deltas)])
                loss = l_train(adapter.answer_logits({**batch, **adapter.to_device(pixels)}), reduction="token_mean")
                grads = torch.autograd.grad(loss, deltas)
            deltas = [(d + self.alpha * g.sign()).clamp(-self.eps, self.eps) for d, g in zip(deltas, grads)]
        with torch.no_grad():
            return adapter.to_device(adapter.process([(x + d).clamp(0, 1) for x, d in zip(raw, deltas)]))

    def __call__(self, module, batch, batch_idx: int) -> torch.Tensor:
        return l_train(module.adapter.answer_logits({**batch, **self.pixels(module, batch)}), reduction="token_mean")


class MaxOverCopies:
    """UEraser's max-loss step: the batch mean of each sample's largest loss over ``probe.copies`` augmentations
    of its raw image (``probe.augment_copies``); ``inner`` makes each copy's pixels (plain or adversarial)."""

    needs_raw_images = True

    def __init__(self, probe, inner: StandardStep, seed: int):
        self.probe, self.inner, self.seed = probe, inner, seed

    def generator(self, epoch: int, batch_idx: int) -> torch.Generator:
        """The augmentation Generator of one training step: a function of (seed, epoch, batch index)."""
        rng = np.random.default_rng([int(self.seed) & ((1 << 63) - 1), int(epoch), int(batch_idx)])
        return torch.Generator().manual_seed(int(rng.integers(0, (1 << 63) - 1)))

    def copies(self, raw: Sequence[torch.Tensor], generator: torch.Generator) -> List[List[torch.Tensor]]:
        """``copies`` augmentations of each raw image: a list over copies of the batch's images. Images of one
        size are augmented together (kornia works on batches)."""
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, x in enumerate(raw):
            groups.setdefault(tuple(x.shape), []).append(i)
        out: List[List[Optional[torch.Tensor]]] = [[None] * len(raw) for _ in range(self.probe.copies)]
        with torch.no_grad():
            for idx in groups.values():
                copies = self.probe.augment_copies(torch.stack([raw[i] for i in idx]), generator)
                for k in range(copies.shape[0]):
                    for j, i in enumerate(idx):
                        out[k][i] = copies[k, j]
        return out  # type: ignore[return-value]

    def per_copy_losses(self, module, batch, copies: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """(copies, B) per-sample losses."""
        return torch.stack([l_train(module.adapter.answer_logits({**batch, **self.inner.pixels(module, batch, images)}),
                                    reduction="sample_mean") for images in copies])

    def scores(self, module, batch, copies: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """(copies, B) per-sample losses without a graph, in one forward pass over the batch repeated once per
        copy (copy-major): on small models the per-pass overhead, not the samples, is the cost."""
        if len(copies) == 1:
            return self.per_copy_losses(module, batch, copies)
        pixels = self.inner.pixels(module, batch, [x for images in copies for x in images])
        # what collate_tokens made is (B, L) by contract; the pixel inputs are the copies' own
        tokens = {k: v.repeat(len(copies), 1) for k, v in batch.items() if k not in pixels and k != "raw_images"}
        losses = l_train(module.adapter.answer_logits({**tokens, **pixels}), reduction="sample_mean")
        return losses.view(len(copies), -1)

    def __call__(self, module, batch, batch_idx: int) -> torch.Tensor:
        raw = [x.to(module.device) for x in batch["raw_images"]]
        copies = self.copies(raw, self.generator(module.current_epoch, batch_idx))
        if self.inner.random_pixels:  # each copy's pixels are drawn once: the gradient flows through all of them
            return self.per_copy_losses(module, batch, copies).max(0).values.mean()
        # The gradient of a max is the gradient of its argmax: score the copies without a graph, then one
        # forward and backward on each sample's worst copy (the same loss and gradient, a third of the work).
        with torch.no_grad():
            worst = self.scores(module, batch, copies).argmax(0).tolist()
        chosen = [copies[k][i] for i, k in enumerate(worst)]
        return self.per_copy_losses(module, batch, [chosen])[0].mean()


def training_step_for(adversarial: Optional[Tuple[float, int, float]], augment, seed: int):
    """The step strategy of a fine-tuning run: adversarial (eps, steps, alpha) or not, with a training-step
    augmentation (ueraser) or not."""
    inner = AdversarialStep(*adversarial) if adversarial else StandardStep()
    return MaxOverCopies(augment, inner, seed) if augment is not None else inner
