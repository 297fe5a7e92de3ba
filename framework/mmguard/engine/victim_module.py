"""VictimModule: one unauthorized fine-tuning run (LightningModule) and its evaluation by greedy generation."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_cosine_schedule_with_warmup

from mmguard.metrics.accuracy import VQAAccuracy, is_correct


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled (answer) tokens."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def per_sample_answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) mean next-token cross-entropy over each sample's own answer tokens."""
    targets = labels[:, 1:]
    tok = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets, ignore_index=-100, reduction="none")
    mask = (targets != -100).to(tok.dtype)
    return (tok * mask).sum(1) / mask.sum(1).clamp(min=1)


class VictimModule(L.LightningModule):
    """``augment``: a probe with ``augment_copies`` (ueraser): each training step draws its ``copies``
    augmentations of every raw image, computes the per-sample loss of each copy and back-propagates the mean over
    the batch of the per-sample maximum (UEraser's max-loss step), seeded by (seed, epoch, batch index)."""

    def __init__(self, adapter, victim, lr: float = 1e-3, weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 max_new_tokens: int = 8, eval_batch_size: int = 64, adv_eps: float = 0.0, adv_steps: int = 0,
                 adv_alpha: float = 0.0, augment=None, seed: int = 0):
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model  # registered so Lightning moves it and counts its parameters
        self.trainable = victim.prepare(adapter)
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        # adversarial training (a probe): PGD on the raw images inside the loop, L-inf budget adv_eps
        self.adv_eps, self.adv_steps = adv_eps, adv_steps
        self.adv_alpha = adv_alpha or (2.5 * adv_eps / max(1, adv_steps))
        self.augment, self.seed = augment, seed
        self.accuracy = VQAAccuracy()
        self.predictions: List[Dict[str, object]] = []

    @property
    def adversarial(self) -> bool:
        return self.adv_eps > 0 and self.adv_steps > 0

    def adversarial_pixels(self, batch, raw: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Madry-style PGD: the pixel inputs of the worst raw-image perturbation within adv_eps (8-bit).
        ``raw``: the images to perturb (default: the batch's raw images)."""
        raw = [x.to(self.device) for x in (batch["raw_images"] if raw is None else raw)]
        deltas = [torch.empty_like(x).uniform_(-self.adv_eps, self.adv_eps) for x in raw]
        for _ in range(self.adv_steps):
            deltas = [d.detach().requires_grad_(True) for d in deltas]
            with torch.enable_grad():
                pixels = self.adapter.process([(x + d).clamp(0, 1) for x, d in zip(raw, deltas)])
                loss = answer_token_loss(self.adapter.forward({**batch, **self.adapter.to_device(pixels)}),
                                         batch["labels"])
                grads = torch.autograd.grad(loss, deltas)
            deltas = [(d + self.adv_alpha * g.sign()).clamp(-self.adv_eps, self.adv_eps)
                      for d, g in zip(deltas, grads)]
        with torch.no_grad():
            return self.adapter.to_device(self.adapter.process([(x + d).clamp(0, 1) for x, d in zip(raw, deltas)]))

    # -- UEraser: max loss over augmented copies -------------------------------------------------------------
    def step_generator(self, batch_idx: int) -> torch.Generator:
        """The augmentation Generator of one training step: a function of (seed, epoch, batch index)."""
        rng = np.random.default_rng([int(self.seed) & ((1 << 63) - 1), int(self.current_epoch), int(batch_idx)])
        return torch.Generator().manual_seed(int(rng.integers(0, (1 << 63) - 1)))

    def augmented_copies(self, raw: Sequence[torch.Tensor], generator: torch.Generator) -> List[List[torch.Tensor]]:
        """``copies`` augmentations of each raw image: a list over copies of the batch's images. Images of one
        size are augmented together (kornia works on batches)."""
        groups: Dict[Tuple[int, ...], List[int]] = {}
        for i, x in enumerate(raw):
            groups.setdefault(tuple(x.shape), []).append(i)
        out: List[List[Optional[torch.Tensor]]] = [[None] * len(raw) for _ in range(self.augment.copies)]
        with torch.no_grad():
            for idx in groups.values():
                copies = self.augment.augment_copies(torch.stack([raw[i] for i in idx]), generator)
                for k in range(copies.shape[0]):
                    for j, i in enumerate(idx):
                        out[k][i] = copies[k, j]
        return out  # type: ignore[return-value]

    def max_loss(self, batch, generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
        """UEraser's training loss: the batch mean of each sample's largest loss over its augmented copies, and
        the (copies, B) per-sample losses it took the maximum of. Adversarial training, when on, perturbs each
        copy."""
        raw = [x.to(self.device) for x in batch["raw_images"]]
        losses = []
        for images in self.augmented_copies(raw, generator):
            if self.adversarial:
                pixels = self.adversarial_pixels(batch, images)
            else:
                pixels = self.adapter.to_device(self.adapter.process(images))
            losses.append(per_sample_answer_loss(self.adapter.forward({**batch, **pixels}), batch["labels"]))
        per_copy = torch.stack(losses)
        return per_copy.max(0).values.mean(), per_copy

    # -- Lightning --------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # a pre-trained twin is built in eval mode; the fine-tuner trains in train mode (dropout on)
        self.model.train()

    def training_step(self, batch, batch_idx):
        if self.augment is not None:
            loss, _ = self.max_loss(batch, self.step_generator(batch_idx))
        else:
            if self.adversarial:
                batch = {**batch, **self.adversarial_pixels(batch)}
            loss = answer_token_loss(self.adapter.forward(batch), batch["labels"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.trainable, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_cosine_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_test_epoch_start(self) -> None:
        self.accuracy.reset()
        self.predictions = []

    def test_step(self, samples, batch_idx):
        preds = self.adapter.generate(samples, max_new_tokens=self.max_new_tokens, batch_size=self.eval_batch_size)
        self.accuracy.update(preds, samples)
        for s, p in zip(samples, preds):
            self.predictions.append({"id": s.id, "prediction": p, "answer": s.answer, "correct": is_correct(p, s)})

    def on_test_epoch_end(self) -> None:
        self.log("test/accuracy", self.accuracy.compute(), prog_bar=True)
