"""VictimModule: one unauthorized fine-tuning run (LightningModule) and its evaluation by greedy generation."""
from __future__ import annotations

from typing import Dict, List

import lightning as L
import torch
import torch.nn.functional as F
from transformers import get_cosine_schedule_with_warmup

from mmguard.metrics.accuracy import VQAAccuracy, is_correct


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled (answer) tokens."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


class VictimModule(L.LightningModule):
    def __init__(self, adapter, victim, lr: float = 1e-3, weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 max_new_tokens: int = 8, eval_batch_size: int = 64, adv_eps: float = 0.0, adv_steps: int = 0,
                 adv_alpha: float = 0.0):
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model  # registered so Lightning moves it and counts its parameters
        self.trainable = victim.prepare(adapter)
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        # adversarial training (a probe): PGD on the raw images inside the loop, L-inf budget adv_eps
        self.adv_eps, self.adv_steps = adv_eps, adv_steps
        self.adv_alpha = adv_alpha or (2.5 * adv_eps / max(1, adv_steps))
        self.accuracy = VQAAccuracy()
        self.predictions: List[Dict[str, object]] = []

    def adversarial_pixels(self, batch) -> Dict[str, torch.Tensor]:
        """Madry-style PGD: the pixel inputs of the worst raw-image perturbation within adv_eps (8-bit)."""
        raw = [x.to(self.device) for x in batch["raw_images"]]
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

    def training_step(self, batch, batch_idx):
        if self.adv_eps > 0 and self.adv_steps > 0:
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
