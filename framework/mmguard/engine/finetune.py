"""Fine-tune a victim and evaluate it: the two calls every benchmark row is made of."""
from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import lightning as L

from mmguard.config.sections import FinetuneParams, TrainerParams
from mmguard.data.sample import Sample
from mmguard.engine.data import eval_loader, train_loader
from mmguard.engine.steps import training_step_for
from mmguard.engine.strategies import finetune_strategy
from mmguard.engine.trainer import build_trainer
from mmguard.engine.victim_module import VictimModule
from mmguard.probes.base import ProbePlan

DEFAULT_TRAINER = TrainerParams()


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
        # manual optimization (the protection loop) has no optimizer by design
        warnings.filterwarnings("ignore", message=".*configure_optimizers.*returned `None`.*")
        warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")  # inside Lightning
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def finetune(adapter, victim, params: FinetuneParams, train: Sequence[Sample], *, seed: int = 0,
             trainer: Optional[TrainerParams] = None, logger=False, transform: Optional[Callable] = None,
             out_dir: Optional[Path] = None, probe=None, clean: Optional[Sequence[Sample]] = None,
             plan: Optional[ProbePlan] = None, checkpoint_dir: Optional[Path] = None,
             callbacks: Sequence = ()) -> VictimModule:
    """Fine-tune ``adapter`` in place: ``victim`` (a built victim recipe) decides what trains, ``params`` how.

    ``probe`` (a built probe, or None): what the adaptive fine-tuner does to ``train`` (``clean``: the clean set,
    for mix). Its deterministic part is applied once; random stages are re-drawn every epoch in the data path;
    ueraser trains on the max loss over augmented copies in the training step. All seeded by ``seed``. ``plan``:
    the probe's plan made already (``probe.plan(train, clean, seed)``), which then stands for probe and clean.
    ``checkpoint_dir``: a Lightning checkpoint is kept there at every epoch's end, and a fine-tune that finds one
    resumes from it (``ckpt_path``). ``callbacks``: more Lightning callbacks."""
    L.seed_everything(seed, workers=True, verbose=False)
    if plan is None and probe is not None:
        plan = probe.plan(list(train), None if clean is None else list(clean), seed)
    if plan is not None:
        train = plan.samples
    adversarial = (params.adv_eps, params.adv_steps, params.adv_alpha) if params.adversarial else None
    step = training_step_for(adversarial, plan.step if plan is not None else None, seed)
    if params.gradient_checkpointing:
        adapter.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = VictimModule(adapter, victim, lr=params.lr, weight_decay=params.weight_decay,
                          warmup_ratio=params.warmup_ratio, step=step)
    loader = train_loader(adapter, train, params.batch_size, seed, transform=transform,
                          keep_raw=step.needs_raw_images,
                          redraw=plan.draw if plan is not None and plan.dynamic else None)
    callbacks, resume_from = list(callbacks), None
    if checkpoint_dir is not None:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=str(checkpoint_dir), save_last=True, save_top_k=0,
                                         every_n_epochs=1, save_on_train_epoch_end=True))
        last = Path(checkpoint_dir) / "last.ckpt"
        resume_from = str(last) if last.is_file() else None
    with quiet_lightning():
        lt = build_trainer(trainer or DEFAULT_TRAINER, max_epochs=params.epochs, precision=params.precision,
                           grad_accum=params.grad_accum, logger=logger, callbacks=callbacks,
                           checkpointing=checkpoint_dir is not None, strategy=finetune_strategy(trainer or DEFAULT_TRAINER),
                           default_root_dir=str(out_dir) if out_dir else None)
        lt.fit(module, train_dataloaders=loader, ckpt_path=resume_from)
    adapter.model.eval()
    return module


def evaluate(adapter, test: Sequence[Sample], *, max_new_tokens: int = 8, batch_size: int = 64,
             trainer: Optional[TrainerParams] = None, logger=False, module: Optional[VictimModule] = None
             ) -> Dict[str, object]:
    """Greedy-generate answers for the clean test set; accuracy and per-sample predictions."""
    if module is None:
        module = VictimModule(adapter, _NoTraining(), max_new_tokens=max_new_tokens, eval_batch_size=batch_size)
    module.max_new_tokens, module.eval_batch_size = max_new_tokens, batch_size
    with quiet_lightning():
        lt = build_trainer(trainer or DEFAULT_TRAINER, max_epochs=1, logger=logger)
        lt.test(module, dataloaders=eval_loader(test, batch_size), verbose=False)
    acc = float(module.accuracy.compute())
    position = {s.id: i for i, s in enumerate(test)}
    predictions = sorted(module.predictions, key=lambda p: position[p["id"]])
    return {"accuracy": acc, "predictions": predictions, "n": len(test)}


class _NoTraining:
    """Evaluation only: nothing is made trainable."""

    def prepare(self, adapter):
        return []
