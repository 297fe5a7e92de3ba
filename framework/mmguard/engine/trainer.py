"""Building Lightning Trainers and loggers from a recipe's trainer and logger sections."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, List, Optional

import lightning as L


def build_logger(cfg, out_dir: Path, run_name: str):
    """csv (default) | tensorboard | wandb | none. W&B is offline unless an API key is set, and its run id is
    derived from the output folder and row, so a requeued job resumes its own run."""
    name = cfg.name if cfg is not None else "csv"
    if name == "none":
        return False
    if name == "csv":
        return L.pytorch.loggers.CSVLogger(str(out_dir / "logs"), name=run_name)
    if name == "tensorboard":
        return L.pytorch.loggers.TensorBoardLogger(str(out_dir / "logs"), name=run_name)
    if name == "wandb":
        offline = cfg.offline if cfg.offline is not None else not os.environ.get("WANDB_API_KEY")
        run_id = hashlib.sha1(f"{out_dir.resolve()}::{run_name}".encode()).hexdigest()[:12]
        return L.pytorch.loggers.WandbLogger(project=cfg.project, entity=cfg.entity, name=run_name, id=run_id,
                                             save_dir=str(out_dir), offline=offline, tags=list(cfg.tags),
                                             resume="allow")
    raise ValueError(f"logger.name '{name}' is not one of csv, tensorboard, wandb, none")


def build_trainer(trainer_cfg, *, max_epochs: int, precision: str = "32-true", grad_accum: int = 1,
                  logger: Any = False, callbacks: Optional[List] = None, default_root_dir: Optional[str] = None,
                  max_steps: int = -1) -> L.Trainer:
    tc = trainer_cfg
    return L.Trainer(
        accelerator=getattr(tc, "accelerator", "auto"), devices=getattr(tc, "devices", 1),
        strategy=getattr(tc, "strategy", "auto"), num_nodes=getattr(tc, "num_nodes", 1),
        precision=precision, max_epochs=max_epochs, max_steps=max_steps, accumulate_grad_batches=grad_accum,
        logger=logger, callbacks=callbacks or [], enable_checkpointing=False,
        enable_progress_bar=getattr(tc, "progress_bar", True), enable_model_summary=False,
        deterministic=getattr(tc, "deterministic", True), log_every_n_steps=5,
        default_root_dir=default_root_dir, num_sanity_val_steps=0,
    )
