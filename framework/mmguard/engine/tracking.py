"""Experiment tracking of a run folder: one tracked run per results row, finished when the row is.

``Tracking(params, run_dir, done)`` is built once per run folder from the recipe's ``logger`` section. For each
row (a protection, a fine-tune, an evaluation) ``with tracking.row(name, job_type, config) as row:`` starts one
run and hands out ``row.logger``, the Lightning logger for every Trainer of that row (so ``train/loss``,
``protect/*`` and ``test/accuracy`` arrive); ``row.log_summary(metrics, history)`` records the row's numbers
and per-round protection history; the run is finished on leaving the block, so rows never share a run.

csv and tensorboard write ``run_dir/logs/<row>/version_N/`` with the same metrics (the config as hparams, the
summary and history as metrics). W&B: ``group`` is the run folder's name, ``job_type`` the kind of row, ``name``
the row, ``id`` derived from the folder's absolute path and the row, ``resume="allow"``: a requeued job that
reaches an unfinished row continues its run, and a row ``done`` says is finished is not logged again. The
config is the row's resolved spec flattened to dotted keys (``config/flatten.py``) for W&B's run table. W&B is
offline unless ``WANDB_API_KEY`` is set (``logger.offline`` decides when given); ``wandb sync DIR/wandb`` uploads.

Launched by ``wandb agent`` (``mmguard sweep --backend wandb``), the agent's run is the group summary run,
which holds the sweep's metric (``delta_acc``); the rows get runs of their own, outside the sweep.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence

from mmguard.config.sections import LoggerParams

#: kinds of rows (W&B ``job_type``); the group summary run is ``summary``
JOB_TYPES = ("protect", "finetune", "evaluate")
SUMMARY = "summary"
#: what ``wandb agent`` sets for the program it launches; taken over by the summary run (see Tracking.__init__)
SWEEP_ENV = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")


def run_id(run_dir: Path, row: str) -> str:
    """A W&B run id that the same row of the same folder gets again in a requeued job."""
    return hashlib.sha1(f"{Path(run_dir).resolve()}::{row}".encode()).hexdigest()[:12]


def wandb_offline(params: LoggerParams) -> bool:
    return params.offline if params.offline is not None else not os.environ.get("WANDB_API_KEY")


def _rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class RowRun:
    """One row's tracked run (handed out by ``Tracking.row``). ``logger``: give it to the row's Trainers
    (``finetune(logger=...)``, ``evaluate(logger=...)``, ``protect(logger=...)``); False when nothing is tracked.
    ``skipped``: the row was finished in an earlier job and is not logged again."""

    def __init__(self, name: str, logger: Any = False, experiment: Any = None, artifacts: bool = False,
                 skipped: bool = False):
        self.name, self.logger, self.skipped = name, logger, skipped
        self._experiment, self._artifacts = experiment, artifacts

    def log_summary(self, metrics: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> None:
        """The row's final numbers (a results row: accuracy, delta_acc, psnr, ssim, seconds, ...; None and
        lists are left out) and the protection's per-round history (``round``, ``l_prot``,
        ``surrogate_train_accuracy``), logged as ``round/<key>`` over ``round``."""
        if self.logger is False:
            return
        numbers = {k: float(v) for k, v in metrics.items() if _number(v)}
        if self._experiment is not None:  # W&B, rank zero
            self._experiment.summary.update({**numbers, **{k: v for k, v in metrics.items()
                                                           if isinstance(v, str)}})
            for record in history:
                self._experiment.log({"round": int(record["round"]), **{
                    f"round/{k}": float(v) for k, v in record.items() if k != "round" and _number(v)}})
            return
        if not numbers and not history:
            return
        for record in history:
            self.logger.log_metrics({f"round/{k}": float(v) for k, v in record.items()
                                     if k != "round" and _number(v)}, step=int(record["round"]))
        self.logger.log_metrics(numbers, step=len(history))

    def log_protected(self, folder: str | Path) -> None:
        """With ``logger.artifacts``: the protected set folder (data.json, images/, manifest.json) as a W&B
        artifact of this run, named ``<run folder>-<attack label>``."""
        if self._experiment is None or not self._artifacts:
            return
        import wandb

        folder = Path(folder)
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{self._experiment.group}-{folder.name}")
        artifact = wandb.Artifact(name, type="dataset", description=f"protected set {folder.name}")
        artifact.add_dir(str(folder))
        self._experiment.log_artifact(artifact)


class Tracking:
    """The tracking of one run folder. ``done(row_name)``: whether a row was finished by an earlier job of
    this folder (its runs are not started again); by default none is."""

    def __init__(self, params: Optional[LoggerParams], run_dir: str | Path,
                 done: Optional[Callable[[str], bool]] = None, group: Optional[str] = None):
        self.params = params or LoggerParams()
        self.run_dir = Path(run_dir)
        self._group = group  # a seed's run folder belongs to its parent's group
        self.done = done or (lambda name: False)
        self.sweep: Dict[str, str] = {}
        if self.params.name == "wandb" and os.environ.get("WANDB_SWEEP_ID"):
            # W&B reads these once per process and would then give every run of this folder the agent's id,
            # putting all rows back into one run; the summary run takes them over instead.
            self.sweep = {env: os.environ.pop(env) for env in SWEEP_ENV if env in os.environ}

    @property
    def enabled(self) -> bool:
        return self.params.name != "none"

    @property
    def group(self) -> str:
        return self._group or self.run_dir.resolve().name

    # -- one row --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def row(self, name: str, job_type: str, config: Mapping[str, Any]) -> Iterator[RowRun]:
        """One row's run: started here, finished on leaving the block (marked failed if the block raises)."""
        if job_type not in JOB_TYPES:
            raise ValueError(f"job_type {job_type!r}: one of {', '.join(JOB_TYPES)}")
        if not self.enabled or self.done(name):
            yield RowRun(name, skipped=self.enabled)
            return
        if self.params.name == "wandb":
            with self._wandb_row(name, job_type, config) as run:
                yield run
            return
        from mmguard.engine.trainer import build_logger

        logger = build_logger(self.params, self.run_dir, name)
        logger.log_hyperparams(dict(config))
        status = "failed"
        try:
            yield RowRun(name, logger)
            status = "success"
        finally:
            logger.finalize(status)

    def _init(self, name: str, job_type: str, config: Mapping[str, Any], run: Optional[str] = None, **settings):
        import wandb

        return wandb.init(
            project=self.params.project, entity=self.params.entity, group=self.group, job_type=job_type, name=name,
            id=run or run_id(self.run_dir, name), resume="allow", dir=str(self.run_dir), tags=list(self.params.tags),
            mode="offline" if wandb_offline(self.params) else "online", config=dict(config), reinit="create_new",
            settings=wandb.Settings(quiet=True, **settings))

    @contextlib.contextmanager
    def _wandb_row(self, name: str, job_type: str, config: Mapping[str, Any]) -> Iterator[RowRun]:
        from lightning.pytorch.loggers import WandbLogger

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if _rank() != 0:  # other ranks: Lightning's logger, which never starts a run off rank zero
            yield RowRun(name, WandbLogger(project=self.params.project, name=name, save_dir=str(self.run_dir)))
            return
        experiment = self._init(name, job_type, config)
        experiment.define_metric("trainer/global_step")
        for prefix in ("train", "test", "protect"):
            experiment.define_metric(f"{prefix}/*", step_metric="trainer/global_step")
        experiment.define_metric("round")
        experiment.define_metric("round/*", step_metric="round")
        logger = WandbLogger(experiment=experiment, project=self.params.project, name=name,
                             save_dir=str(self.run_dir))
        exit_code = 1
        try:
            yield RowRun(name, logger, experiment, artifacts=self.params.artifacts)
            exit_code = 0
        finally:
            experiment.finish(exit_code=exit_code)

    # -- the group ------------------------------------------------------------------------------------------
    def summary_run(self, results: Mapping[str, Any], clean: Any = (), report: Optional[str | Path] = None,
                    samples: int = 4) -> bool:
        """W&B only: the group's summary run (name ``<group> summary``, job_type ``summary``) with the table
        of every row, per attack an image panel (clean, protected, amplified perturbation, the triggered
        question) from ``run_dir/protected/<label>/`` and ``clean`` (the train samples, a list or a mapping by
        id), report.html when given, and summary means of delta_acc and accuracy per attack. Skipped when
        ``done("summary")``. Returns whether a run was written."""
        if self.params.name != "wandb" or self.done(SUMMARY) or _rank() != 0:
            return False
        from mmguard.config.flatten import flatten
        from mmguard.engine import panels

        # its config keys are the sweep's parameter names (``attacks.0.lambda_bind``), flattened the same way
        settings = {"sweep_id": self.sweep["WANDB_SWEEP_ID"]} if self.sweep else {}
        experiment = self._init(f"{self.group} {SUMMARY}", SUMMARY, flatten(results.get("config") or {}),
                                run=self.sweep.get("WANDB_RUN_ID", run_id(self.run_dir, SUMMARY)), **settings)
        exit_code = 1
        try:
            panels.log_group(experiment, results, self.run_dir / "protected", clean, report, samples)
            exit_code = 0
        finally:
            experiment.finish(exit_code=exit_code)
        return True
