"""The logger section: csv (default), tensorboard, wandb (offline without an API key), none."""
import lightning as L
import pytest

from mmguard.config.sections import LoggerParams
from mmguard.engine.trainer import build_logger


def cfg(name, **kw):
    return LoggerParams(name=name, project="mmguard-test", tags=["t"], offline=kw.get("offline"))


def test_csv_and_none(tmp_path):
    assert isinstance(build_logger(cfg("csv"), tmp_path, "row"), L.pytorch.loggers.CSVLogger)
    assert build_logger(cfg("none"), tmp_path, "row") is False


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    assert isinstance(build_logger(cfg("tensorboard"), tmp_path, "row"), L.pytorch.loggers.TensorBoardLogger)


def test_wandb_offline_without_key_and_stable_run_id(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    a = build_logger(cfg("wandb"), tmp_path, "clean__tiny-llava/lora")
    b = build_logger(cfg("wandb"), tmp_path, "clean__tiny-llava/lora")
    assert isinstance(a, L.pytorch.loggers.WandbLogger)
    assert a._offline and a._wandb_init.get("mode", "offline") == "offline"
    assert a._id == b._id  # a requeued job finds its own run
    a.log_metrics({"x": 1.0})
    a.experiment.finish()
