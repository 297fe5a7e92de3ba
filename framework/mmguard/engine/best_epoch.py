"""BestEpoch: the fine-tuner who stops early keeps the weights of its best validated epoch."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import lightning as L
import torch


class BestEpoch(L.Callback):
    """After each validation, a copy of the module's trainable parameters when ``monitor`` beats every earlier
    epoch (strictly: the earliest of equal epochs is kept, where Lightning's EarlyStopping would stop); when the
    fit ends they are put back. Only the trainable parameters are copied (an adapter's, not the frozen model), and
    the copy lives in memory and in the fit's Lightning checkpoints (``state_dict``), so a resumed fit keeps it.
    ``epoch``: the epochs of training behind the kept weights (1: after the first)."""

    def __init__(self, monitor: str = "val/accuracy"):
        self.monitor = monitor
        self.best: Optional[float] = None
        self.epoch: Optional[int] = None
        self.weights: Optional[List[torch.Tensor]] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        value = float(value)
        if math.isnan(value):
            value = -math.inf
        if self.best is None or value > self.best:
            self.best, self.epoch = value, trainer.current_epoch + 1
            self.weights = [p.detach().to("cpu", copy=True) for p in pl_module.trainable]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.weights is not None:
            with torch.no_grad():
                for p, w in zip(pl_module.trainable, self.weights):
                    p.copy_(w.to(p.device, p.dtype))

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best, self.epoch, self.weights = state["best"], state["epoch"], state["weights"]
