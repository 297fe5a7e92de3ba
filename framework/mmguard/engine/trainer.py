"""Lightning Trainers and loggers from a recipe's trainer and logger sections."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import lightning as L
import torch

from mmguard.config.sections import LoggerParams, TrainerParams


def build_logger(params: Optional[LoggerParams], out_dir: Path, run_name: str):
    """The file logger of one row: csv (default), tensorboard, or none; W&B runs are ``engine/tracking.py``'s."""
    name = params.name if params is not None else "csv"
    if name == "csv":
        return L.pytorch.loggers.CSVLogger(str(out_dir / "logs"), name=run_name)
    if name == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(str(out_dir / "logs"), name=run_name)
    if name == "none":
        return False
    raise ValueError(f"logger '{name}' is not a file logger; W&B rows go through engine/tracking.py")


def on_gpu(params: TrainerParams) -> bool:
    return params.accelerator in ("gpu", "cuda") or (params.accelerator == "auto" and torch.cuda.is_available())


def resolve_precision(precision: str, params: TrainerParams) -> str:
    """``auto``: bf16 mixed precision on GPUs that have it, 32-bit elsewhere."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if on_gpu(params) and torch.cuda.is_bf16_supported() else "32-true"


def build_trainer(params: TrainerParams, *, max_epochs: int, precision: str = "auto", grad_accum: int = 1,
                  logger: Any = False, callbacks: Optional[List] = None, default_root_dir: Optional[str] = None,
                  max_steps: int = -1, strategy: Any = None, checkpointing: bool = False) -> L.Trainer:
    """A Trainer from the recipe's trainer section. ``strategy`` replaces the recipe's (the protection loop's
    own); samplers are the engine's own, which shard by rank themselves (no distributed sampler swapped in)."""
    deterministic = params.deterministic
    if deterministic is None:  # antialiased resizing has no deterministic CUDA backward: warn there
        deterministic = "warn" if on_gpu(params) else True
    return L.Trainer(
        accelerator=params.accelerator, devices=params.devices, strategy=strategy or params.strategy,
        num_nodes=params.num_nodes, precision=resolve_precision(precision, params), max_epochs=max_epochs,
        max_steps=max_steps, accumulate_grad_batches=grad_accum, logger=logger, callbacks=callbacks or [],
        enable_checkpointing=checkpointing, enable_progress_bar=params.progress_bar, enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=deterministic, log_every_n_steps=5, default_root_dir=default_root_dir, num_sanity_val_steps=0,
    )
