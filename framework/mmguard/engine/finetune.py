"""Fine-tune a victim and evaluate it: the two calls every benchmark row is made of."""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Sequence

import lightning as L

from mmguard.data.sample import Sample
from mmguard.engine.data import eval_loader, train_loader
from mmguard.engine.trainer import build_trainer
from mmguard.engine.victim_module import VictimModule
from mmguard.core.registry import VICTIMS

DEFAULT_TRAINER = SimpleNamespace(accelerator="auto", devices=1, strategy="auto", num_nodes=1, progress_bar=True,
                                  deterministic=True)


@contextlib.contextmanager
def quiet_lightning():
    """Lightning's banners ("GPU available: False ...") once per row drown the results; keep progress bars."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
             "lightning.fabric.utilities.seed", "lightning.pytorch.utilities.seed")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*deterministic.*")
        yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def probe_plan(probe: Any, train: Sequence[Sample], clean: Optional[Sequence[Sample]], seed: int):
    """The plan of a probe spec (a name, a ``{name: ..., **params}`` mapping or a Probe; None or "none": as
    is) on the training set, or None for no probe."""
    if probe is None or probe == "none" or (hasattr(probe, "get") and probe.get("name") == "none"):
        return None
    from mmguard.probes import build_probe

    return build_probe(probe).plan(list(train), None if clean is None else list(clean), seed)


def finetune(adapter, victim_cfg, train: Sequence[Sample], *, seed: int = 0, trainer_cfg=None, logger=False,
             transform: Optional[Callable] = None, out_dir: Optional[Path] = None, probe: Any = None,
             clean: Optional[Sequence[Sample]] = None) -> VictimModule:
    """Fine-tune ``adapter`` in place with the victim recipe ``victim_cfg`` (recipe.VictimConfig fields).

    ``probe``: what the adaptive fine-tuner does to ``train`` (``clean``: the clean set, for mix). Its
    deterministic part is applied once; random stages are re-drawn every epoch in the data path; ueraser
    trains on the max loss over augmented copies in the training step. All seeded by ``seed``."""
    L.seed_everything(seed, workers=True, verbose=False)
    plan = probe_plan(probe, train, clean, seed)
    if plan is not None:
        train = plan.samples
    victim = VICTIMS.build(victim_cfg.name, rank=victim_cfg.rank, alpha=victim_cfg.alpha, dropout=victim_cfg.dropout)
    from mmguard.attacks.base import parse_number

    adv = {k: parse_number(getattr(victim_cfg, k, 0) or 0, f"victims.{k}") for k in ("adv_eps", "adv_alpha")}
    adv_steps = int(getattr(victim_cfg, "adv_steps", 0) or 0)
    step = plan.step if plan is not None else None
    module = VictimModule(adapter, victim, lr=victim_cfg.lr, weight_decay=victim_cfg.weight_decay,
                          warmup_ratio=victim_cfg.warmup_ratio, adv_steps=adv_steps, augment=step, seed=seed, **adv)
    loader = train_loader(adapter, train, victim_cfg.batch_size, seed, transform=transform,
                          keep_raw=(adv["adv_eps"] > 0 and adv_steps > 0) or step is not None,
                          redraw=plan.draw if plan is not None and plan.dynamic else None)
    with quiet_lightning():
        trainer = build_trainer(trainer_cfg or DEFAULT_TRAINER, max_epochs=victim_cfg.epochs,
                                precision=victim_cfg.precision, grad_accum=victim_cfg.grad_accum, logger=logger,
                                default_root_dir=str(out_dir) if out_dir else None)
        trainer.fit(module, train_dataloaders=loader)
    adapter.model.eval()
    return module


def evaluate(adapter, test: Sequence[Sample], *, max_new_tokens: int = 8, batch_size: int = 64, trainer_cfg=None,
             logger=False, module: Optional[VictimModule] = None) -> Dict[str, object]:
    """Greedy-generate answers for the clean test set; accuracy and per-sample predictions."""
    if module is None:
        module = VictimModule(adapter, _NoTraining(), max_new_tokens=max_new_tokens, eval_batch_size=batch_size)
    module.max_new_tokens, module.eval_batch_size = max_new_tokens, batch_size
    with quiet_lightning():
        trainer = build_trainer(trainer_cfg or DEFAULT_TRAINER, max_epochs=1, logger=logger)
        trainer.test(module, dataloaders=eval_loader(test, batch_size), verbose=False)
    acc = float(module.accuracy.compute())
    return {"accuracy": acc, "predictions": list(module.predictions), "n": len(test)}


class _NoTraining:
    """Evaluation only: nothing is made trainable."""

    def prepare(self, adapter):
        return []


