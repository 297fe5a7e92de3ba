"""VictimModule: one unauthorized fine-tuning run (LightningModule) and its evaluation by greedy generation.

What one training step computes is a step strategy it is given (``engine/steps.py``: l_train on the batch,
adversarial training, UEraser's max over augmented copies); the module owns the optimizer, the schedule and the
test loop.
"""
from __future__ import annotations

import random
from typing import Dict, List

import lightning as L
import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from mmguard.data.sample import Sample
from mmguard.engine import distributed
from mmguard.engine.steps import StandardStep
from mmguard.metrics.accuracy import VQAAccuracy, is_correct


class VictimModule(L.LightningModule):
    def __init__(self, adapter, victim, lr: float = 1e-3, weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 max_new_tokens: int = 8, eval_batch_size: int = 64, step=None):
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model  # registered so Lightning moves it and counts its parameters
        self.trainable = victim.prepare(adapter)
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        self.step = step or StandardStep()
        self.accuracy = VQAAccuracy()
        self.predictions: List[Dict[str, object]] = []

    # -- Lightning --------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # a pre-trained twin is built in eval mode; the fine-tuner trains in train mode (dropout on)
        self.model.train()

    def training_step(self, batch, batch_idx):
        loss = self.step(self, batch, batch_idx)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        # the fused kernel: one pass over all parameters instead of a dozen small ops per tensor (on CPU as on GPU)
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in self.trainable)
        opt = torch.optim.AdamW(self.trainable, lr=self.lr, weight_decay=self.weight_decay, fused=fused or None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_cosine_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Evaluation batches are Samples (the adapter moves their pixels when it generates); Lightning's generic
        walk would deep-copy every Sample and its image."""
        if isinstance(batch, list) and batch and isinstance(batch[0], Sample):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_test_epoch_start(self) -> None:
        self.accuracy.reset()
        self.predictions = []

    def test_step(self, samples, batch_idx):
        preds = self.adapter.generate(samples, max_new_tokens=self.max_new_tokens, batch_size=self.eval_batch_size)
        self.accuracy.update(preds, samples)
        for s, p in zip(samples, preds):
            self.predictions.append({"id": s.id, "prediction": p, "answer": s.answer, "correct": is_correct(p, s)})

    def on_test_epoch_end(self) -> None:
        # every rank predicted its own samples (no padding): everyone gets all of them, each once
        self.predictions = [p for part in distributed.gather_objects(self.predictions) for p in part]
        self.log("test/accuracy", self.accuracy.compute(), prog_bar=True)

    # -- a resumed fine-tune continues with the random state it stopped with (dropout, augmentation) -------------
    def on_save_checkpoint(self, checkpoint) -> None:
        checkpoint["mmguard_rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                     "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint) -> None:
        state = checkpoint.get("mmguard_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])
            np.random.set_state(state["numpy"])
            random.setstate(state["python"])
