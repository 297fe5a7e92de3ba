"""VictimModule: one unauthorized fine-tuning run (LightningModule) and its evaluation by greedy generation.

What one training step computes is a step strategy it is given (``engine/steps.py``: l_train on the batch,
adversarial training, UEraser's max over augmented copies); the module owns the optimizer, the schedule and the
test loop. Its validation loop scores, after every epoch, the sets a fine-tune watches (``watching``: early_stop's
held-out split ``val``, the test set ``test`` for per-epoch accuracy) into ``epoch_accuracy``; its predict loop
gives each sample's loss (what isolate ranks).
"""
from __future__ import annotations

import random
from typing import Any, Dict, List

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from transformers import get_cosine_schedule_with_warmup

from mmguard.attacks.losses import l_train
from mmguard.data.sample import Sample
from mmguard.engine import distributed
from mmguard.engine.data import TrainCollator
from mmguard.engine.steps import StandardStep
from mmguard.metrics.accuracy import VQAAccuracy, is_correct


# the sets a fine-tune can watch after every epoch, and the key each is logged under
WATCHED = {"val": "val/accuracy", "test": "val/test_accuracy"}


class VictimModule(L.LightningModule):
    def __init__(self, adapter, victim, lr: float = 1e-3, weight_decay: float = 0.0, warmup_ratio: float = 0.1,
                 max_new_tokens: int = 8, eval_batch_size: int = 64, step=None):
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model  # registered so Lightning moves it and counts its parameters
        self.trainable = victim.prepare(adapter)
        # a checkpoint keeps what trains (on_save_checkpoint): the frozen weights are absent from it by design
        self.strict_loading = False
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.max_new_tokens, self.eval_batch_size = max_new_tokens, eval_batch_size
        self.step = step or StandardStep()
        self.accuracy = VQAAccuracy()
        self.predictions: List[Dict[str, object]] = []
        self.watched = torch.nn.ModuleDict({name: VQAAccuracy() for name in WATCHED})
        self.watching: List[str] = []  # the names of this fit's validation loaders, in order
        self.epoch_accuracy: Dict[str, List[float]] = {}  # name -> accuracy after each epoch
        self.record: Dict[str, Any] = {}  # what the fine-tune found (best epoch, isolated ids, ...)

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

    # -- watched sets after every epoch, and per-sample losses -------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        for name in self.watching:
            self.watched[name].reset()

    def validation_step(self, samples, batch_idx, dataloader_idx: int = 0):
        preds = self.adapter.generate(samples, max_new_tokens=self.max_new_tokens, batch_size=self.eval_batch_size)
        self.watched[self.watching[dataloader_idx]].update(preds, samples)

    def on_validation_epoch_end(self) -> None:
        for name in self.watching:
            value = float(self.watched[name].compute())  # summed over ranks
            self.epoch_accuracy.setdefault(name, []).append(value)
            self.log(WATCHED[name], value, add_dataloader_idx=False, sync_dist=True)

    def predict_step(self, samples, batch_idx, dataloader_idx: int = 0):
        """(id, loss) per sample: the mean over its answer tokens (the model in eval mode, no gradient)."""
        batch = move_data_to_device(TrainCollator(self.adapter)(samples), self.device)
        losses = l_train(self.adapter.answer_logits(batch), reduction="sample_mean")
        return [(s.id, float(v)) for s, v in zip(samples, losses)]

    # -- a resumed fine-tune continues with the random state it stopped with (dropout, augmentation) -------------
    # (numpy's state as a tensor and numbers: torch.load's default weights_only refuses a numpy array)
    def on_save_checkpoint(self, checkpoint) -> None:
        # frozen weights come back from the model's own source when the fit is rebuilt, so a checkpoint of a LoRA
        # fit is its adapters (megabytes), not the whole model (gigabytes, at every epoch)
        frozen = {n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        kind, key, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["mmguard_rng"] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                                     "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss]}
        checkpoint["mmguard_epoch_accuracy"] = self.epoch_accuracy

    def on_load_checkpoint(self, checkpoint) -> None:
        self.epoch_accuracy = {k: list(v) for k, v in (checkpoint.get("mmguard_epoch_accuracy") or {}).items()}
        state = checkpoint.get("mmguard_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])
            kind, key, pos, has_gauss, gauss = state["numpy"]
            np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
            random.setstate(state["python"])
