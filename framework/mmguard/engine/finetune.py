"""Fine-tune a victim and evaluate it: the two calls every benchmark row is made of."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from mmguard.config.sections import EvalParams, FinetuneParams, TrainerParams
from mmguard.data.sample import Sample
from mmguard.engine import distributed
from mmguard.engine.best_epoch import BestEpoch
from mmguard.engine.data import eval_loader, train_loader
from mmguard.engine.steps import training_step_for
from mmguard.engine.strategies import finetune_strategy
from mmguard.engine.trainer import build_trainer
from mmguard.engine.victim_module import WATCHED, VictimModule
from mmguard.probes.base import ProbePlan
from mmguard.probes.isolate import Isolate

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
        # only fine-tunes that watch a set validate
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`.*")
        yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def readable_checkpoint(path: Path) -> Path:
    """``path`` if it loads as a checkpoint of ours (weights only, memory-mapped: nothing is read twice); otherwise
    one line naming it and the way out, before the fit (Lightning's own load would raise a pickle traceback)."""
    from mmguard.core.errors import UserError

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a cut-short file, an older format, or foreign objects: all unreadable alike
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch's message carries terminal colours
        reason = text.splitlines()[0][:160] if text else type(err).__name__
        raise UserError(f"{path}: this fine-tune's checkpoint cannot be read back ({reason}); move it aside to "
                        f"start the fit again") from None
    return path


def finetune(adapter, victim, params: FinetuneParams, train: Sequence[Sample], *, seed: int = 0,
             trainer: Optional[TrainerParams] = None, logger=False, transform: Optional[Callable] = None,
             out_dir: Optional[Path] = None, probe=None, clean: Optional[Sequence[Sample]] = None,
             plan: Optional[ProbePlan] = None, checkpoint_dir: Optional[Path] = None,
             callbacks: Sequence = (), watch: Optional[Sequence[Sample]] = None,
             evaluation: Optional[EvalParams] = None) -> VictimModule:
    """Fine-tune ``adapter`` in place: ``victim`` (a built victim recipe) decides what trains, ``params`` how.

    ``probe`` (a built probe, or None): what the adaptive fine-tuner does to ``train`` (``clean``: the clean set,
    for mix). Its deterministic part is applied once; random stages are re-drawn every epoch in the data path;
    ueraser trains on the max loss over augmented copies in the training step. All seeded by ``seed``. ``plan``:
    the probe's plan made already (``probe.plan(train, clean, seed)``), which then stands for probe and clean.
    A fit-level probe changes the fit itself: early_stop validates its held-out split after every epoch and keeps
    the best epoch's weights (``BestEpoch``; Lightning's EarlyStopping under ``patience``); isolate fine-tunes a
    few epochs, drops the samples of lowest loss and then fine-tunes on the rest (``_isolate``).
    ``watch``: a set (the test set) whose accuracy is recorded after every epoch, for the peak accuracy;
    ``evaluation``: how those validations generate. What the fit found is in ``module.record`` (``best_epoch``,
    ``val_accuracy``, ``epoch_accuracy``, ``peak_accuracy``, ``peak_epoch``, ``isolated``).
    ``checkpoint_dir``: a Lightning checkpoint is kept there at every epoch's end, and a fine-tune that finds one
    resumes from it (``ckpt_path``). ``callbacks``: more Lightning callbacks."""
    L.seed_everything(seed, workers=True, verbose=False)
    if plan is None and probe is not None:
        plan = probe.plan(list(train), None if clean is None else list(clean), seed)
    if plan is None:
        plan = ProbePlan(list(train))
    adversarial = (params.adv_eps, params.adv_steps, params.adv_alpha) if params.adversarial else None
    step = training_step_for(adversarial, plan.step, seed)
    if params.gradient_checkpointing:
        adapter.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    evaluation = evaluation or EvalParams()
    module = VictimModule(adapter, victim, lr=params.lr, weight_decay=params.weight_decay,
                          warmup_ratio=params.warmup_ratio, step=step, max_new_tokens=evaluation.max_new_tokens,
                          eval_batch_size=evaluation.batch_size)
    fitting = _Fitting(adapter, params, trainer or DEFAULT_TRAINER, seed, logger, transform, out_dir, list(callbacks),
                       None if not watch else list(watch), evaluation.batch_size)
    if isinstance(plan.fit, Isolate):
        _isolate(fitting, module, plan, plan.fit, checkpoint_dir)
    else:
        fitting.run(module, plan, params.epochs, checkpoint_dir)
    tests = module.epoch_accuracy.get("test")
    if tests:
        peak = max(tests)
        module.record.update(epoch_accuracy=tests, peak_accuracy=peak, peak_epoch=tests.index(peak) + 1)
    adapter.model.eval()
    return module


@dataclasses.dataclass
class _Fitting:
    """What every Lightning fit of one fine-tune shares (isolate runs two)."""

    adapter: Any
    params: FinetuneParams
    trainer: TrainerParams
    seed: int
    logger: Any
    transform: Optional[Callable]
    out_dir: Optional[Path]
    callbacks: List
    watch: Optional[List[Sample]]
    eval_batch_size: int

    def run(self, module: VictimModule, plan: ProbePlan, epochs: int, checkpoint_dir: Optional[Path],
            watch: bool = True) -> None:
        """One Lightning fit of ``epochs`` epochs on ``plan``; its validation sets: the plan's ``val`` (early_stop:
        the best epoch is kept) and, when ``watch``, the watched set."""
        loader = train_loader(self.adapter, plan.samples, self.params.batch_size, self.seed, transform=self.transform,
                              keep_raw=module.step.needs_raw_images, redraw=plan.draw if plan.dynamic else None)
        sets = {"val": plan.val, "test": self.watch if watch else None}
        module.watching = [name for name, samples in sets.items() if samples]
        val = [eval_loader(sets[name], self.eval_batch_size, own_rng=True) for name in module.watching]
        callbacks, resume_from, best = list(self.callbacks), None, None
        if plan.val:
            best = BestEpoch(WATCHED["val"])
            callbacks.append(best)
            patience = getattr(plan.fit, "patience", None)
            if patience:
                callbacks.append(EarlyStopping(WATCHED["val"], mode="max", patience=patience,
                                               check_on_train_epoch_end=False))
        if checkpoint_dir is not None:
            # the latest epoch as last.ckpt, rewritten every epoch (Lightning's save_last only follows a top-k save)
            callbacks.append(ModelCheckpoint(dirpath=str(checkpoint_dir), filename="last", save_top_k=1,
                                             every_n_epochs=1, save_on_train_epoch_end=True,
                                             enable_version_counter=False))
            last = Path(checkpoint_dir) / "last.ckpt"
            resume_from = str(readable_checkpoint(last)) if last.is_file() else None
        with quiet_lightning():
            lt = build_trainer(self.trainer, max_epochs=epochs, precision=self.params.precision,
                               grad_accum=self.params.grad_accum, logger=self.logger, callbacks=callbacks,
                               checkpointing=checkpoint_dir is not None, strategy=finetune_strategy(self.trainer),
                               default_root_dir=str(self.out_dir) if self.out_dir else None)
            lt.fit(module, train_dataloaders=loader, val_dataloaders=val or None, ckpt_path=resume_from)
        if best is not None:
            module.record.update(best_epoch=best.epoch, val_accuracy=best.best,
                                 epochs_trained=len(module.epoch_accuracy.get("val", [])))

    def losses(self, module: VictimModule, samples: Sequence[Sample]) -> Dict[str, float]:
        """Each sample's loss under the module's current weights (Lightning's predict loop), id -> loss."""
        if self.transform is not None:
            samples = [self.transform(s) for s in samples]
        with quiet_lightning():
            lt = build_trainer(self.trainer, max_epochs=1, precision=self.params.precision,
                               strategy=finetune_strategy(self.trainer))
            out = lt.predict(module, dataloaders=eval_loader(samples, self.eval_batch_size, own_rng=True))
        mine = [pair for batch in out for pair in batch]
        return dict(pair for part in distributed.gather_objects(mine) for pair in part)


def _isolate(fitting: _Fitting, module: VictimModule, plan: ProbePlan, probe: Isolate,
             checkpoint_dir: Optional[Path]) -> None:
    """Anti-backdoor isolation: ``probe.epochs`` epochs on the whole plan, each sample's loss on the samples as the
    last of them saw them, the lowest ``probe.fraction`` dropped, then the victim's own epochs on the rest, from
    the isolation weights (ABL) or, with ``restart``, from the start weights and the seed's random state again."""
    start = [p.detach().clone() for p in module.trainable] if probe.restart else None
    fitting.run(module, plan, probe.epochs, None if checkpoint_dir is None else Path(checkpoint_dir) / "isolate",
                watch=False)
    losses = fitting.losses(module, plan.epoch(probe.epochs - 1))
    dropped = probe.dropped(losses)
    module.record["isolated"] = sorted(dropped)
    if start is not None:
        with torch.no_grad():
            for p, w in zip(module.trainable, start):
                p.copy_(w)
        L.seed_everything(fitting.seed, workers=True, verbose=False)
    keep = [i for i, s in enumerate(plan.samples) if s.id not in dropped]
    fitting.run(module, plan.subset(keep), fitting.params.epochs, checkpoint_dir)


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
