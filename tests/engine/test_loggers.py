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


def test_wandb_run_ids_are_stable_per_folder_and_row(tmp_path):
    from mmguard.engine.tracking import run_id

    assert run_id(tmp_path, "clean__tiny-llava/lora") == run_id(tmp_path, "clean__tiny-llava/lora")  # requeue
    assert run_id(tmp_path, "clean__tiny-llava/lora") != run_id(tmp_path, "random__tiny-llava/lora")
    assert run_id(tmp_path / "a", "row") != run_id(tmp_path / "b", "row")
