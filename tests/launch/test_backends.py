"""Sweep backends: local subprocesses and a SLURM array job (through submitit's local executor) run tiny points to
completion in their own run folders; the W&B sweep file grids the values and names each run's folder as the
grid does; SLURM times and sizes read as sbatch reads them."""
import json
from pathlib import Path

import pytest
import yaml

from mmguard.config.recipe import load_tree
from mmguard.core.errors import UserError
from mmguard.launch.backends import RunCommand, gigabytes, minutes
from mmguard.launch.collect import collect
from mmguard.launch.sweep import sweep_main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """
name: tiny
data: {name: synthetic, types: [colour], size: 32}
victims: [{name: lora, model: tiny-llava}]
attacks: [{name: random}]
eval: {zero_shot: false, max_new_tokens: 2}
logger: {name: none}
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE)
    return str(path)


def _finished(folder: Path):
    res = json.loads((folder / "results.json").read_text())
    assert [r["attack"] for r in res["rows"]] == ["clean", "random"]
    return res


@pytest.mark.slow
def test_local_backend_runs_two_points(recipe, tmp_path, capsys):
    root = tmp_path / "sweep"
    code = sweep_main([recipe, "--grid", "seed=0,1", "--backend", "local", "--jobs", "2", "--overlay",
                       str(ROOT / "recipes" / "debug.yaml"), "--out", str(root), "--no-report"])
    assert code == 0, capsys.readouterr()
    assert [_finished(root / f"seed-{s}")["seed"] for s in (0, 1)] == [0, 1]
    assert not (root / "seed-0" / "report.html").exists()  # --no-report reached the runs
    assert {p.name for p in (root / "logs").iterdir()} == {"seed-0.log", "seed-1.log"}
    table = collect([root])
    assert [(r["attack"], r["n"], r["seeds"]) for r in table["rows"]] == [("clean", 2, [0, 1]), ("random", 2, [0, 1])]
    assert "2 of 2 runs done" in capsys.readouterr().out


@pytest.mark.slow
def test_slurm_array_through_submitit_local_executor(recipe, tmp_path, capsys):
    root = tmp_path / "sweep"
    code = sweep_main([recipe, "--grid", "attacks.0.eps_x=0.01,0.02", "--backend", "slurm", "--cluster", "local",
                       "--wait", "--time", "0:30:00", "--cpus", "1", "--mem", "2G", "--overlay",
                       str(ROOT / "recipes" / "debug.yaml"), "--out", str(root), "--no-report"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "submitted array job" in out and out.count(": done (task ") == 2
    linf = [json.loads((root / f"eps_x-{e}" / "protected" / "random" / "manifest.json").read_text())
            ["summary"]["linf_max_255"] for e in ("0.01", "0.02")]
    assert linf == [2, 5]  # whole 8-bit levels within each budget: floor(0.01 * 255), floor(0.02 * 255)
    for e in ("0.01", "0.02"):
        _finished(root / f"eps_x-{e}")
    assert len(list((root / "slurm").glob("*_result.pkl"))) == 2


def test_a_requeued_task_runs_the_same_command(tmp_path):
    submitit = pytest.importorskip("submitit")
    cmd = RunCommand("seed-0", ["mmguard", "run", "r.yaml", "seed=0", "--out", "root/seed-0"], str(tmp_path))
    again = cmd.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is cmd and again.args == () and again.kwargs == {}
    assert cmd.exec_argv()[1:] == ["-m", "mmguard.cli", "run", "r.yaml", "seed=0", "--out", "root/seed-0"]


def test_slurm_without_sbatch_is_a_user_error(recipe, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sweep_main([recipe, "--grid", "seed=0,1", "--backend", "slurm", "--out", str(tmp_path / "r")]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err


def test_wandb_sweep_file(recipe, tmp_path, capsys):
    root = tmp_path / "sweep"
    assert sweep_main([recipe, "victims.0.epochs=2", "--grid", "attacks.0.eps_x=0.01,0.02", "--grid", "seed=0,1",
                       "--backend", "wandb", "--overlay", "recipes/debug.yaml", "--out", str(root)]) == 0
    printed = capsys.readouterr().out
    config = yaml.safe_load((root / "sweep.yaml").read_text())
    assert config["method"] == "grid" and config["metric"] == {"name": "delta_acc", "goal": "maximize"}
    assert config["parameters"] == {"attacks.0.eps_x": {"values": [0.01, 0.02]}, "seed": {"values": [0, 1]}}
    assert config["project"] == "mmguard" and "entity" not in config
    out = f"out={root}/eps_x-${{attacks.0.eps_x}}__seed-${{seed}}"
    assert config["command"] == ["mmguard", "run", recipe, "victims.0.epochs=2", "logger.name=wandb", out,
                                 "--overlay", "recipes/debug.yaml", "${args_no_hyphens}"]
    assert f"wandb sweep --project mmguard {root / 'sweep.yaml'}" in printed and "wandb agent mmguard" not in printed
    assert "wandb agent <entity>/mmguard/<SWEEP_ID>" in printed
    # what the agent runs for one point: the folder is the one the grid names
    tree = load_tree(recipe, ["victims.0.epochs=2", "logger.name=wandb", out, "attacks.0.eps_x=0.02", "seed=1"])
    assert tree["out"] == str(root / "eps_x-0.02__seed-1") and tree["logger"]["name"] == "wandb"


def test_wandb_random_sweep_counts_its_draws(recipe, tmp_path, capsys):
    assert sweep_main([recipe, "--grid", "seed=0,1,2", "--random", "2", "--backend", "wandb", "--out",
                       str(tmp_path)]) == 0
    assert yaml.safe_load((tmp_path / "sweep.yaml").read_text())["method"] == "random"
    assert "wandb agent --count 2 " in capsys.readouterr().out


def test_slurm_times_and_sizes():
    assert [minutes(t) for t in ("90", "5:30", "2:00:00", "1-12", "1-12:30", "0:0:1")] == [90, 6, 120, 2160, 2190, 1]
    assert [gigabytes(m) for m in ("32G", "500M", "1T", "16")] == [32, 1, 1024, 16]
    with pytest.raises(UserError, match="--time"):
        minutes("1h")
    with pytest.raises(UserError, match="--mem"):
        gigabytes("lots")
