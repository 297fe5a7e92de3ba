"""Where a sweep's runs go: local subprocesses (``--jobs N`` at a time), one SLURM array job through submitit,
or a W&B sweep file for ``wandb sweep`` / ``wandb agent``. Each run is the plain ``mmguard run`` of its point,
on its own run folder: run again on the same folder, it resumes."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from mmguard.core.errors import UserError
from mmguard.launch.grid import Grid, short_keys


@dataclasses.dataclass
class RunCommand:
    """One point's ``mmguard run``, executed with this Python (``python -m mmguard.cli``). As a submitit task
    it is checkpointable: on preemption or timeout submitit requeues the same command on the same run folder."""

    name: str
    argv: List[str]           # as shown: mmguard run RECIPE ... --out ROOT/<name>
    cwd: str

    def exec_argv(self) -> List[str]:
        return [sys.executable, "-m", "mmguard.cli", *self.argv[1:]]

    def __str__(self) -> str:
        return shlex.join(self.argv)

    def __call__(self) -> str:
        rc = subprocess.run(self.exec_argv(), cwd=self.cwd).returncode
        if rc != 0:
            raise RuntimeError(f"{self} exited with status {rc}")
        return self.name

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self)


# ------------------------------------------------------------------------------------------------------- local
def run_local(commands: Sequence[RunCommand], jobs: int, log_dir: Path) -> int:
    """Run the commands, ``jobs`` at a time, each one's output in ``log_dir/<name>.log``. Returns the number
    that failed."""
    log_dir.mkdir(parents=True, exist_ok=True)

    def one(cmd: RunCommand):
        t0 = time.time()
        log = log_dir / f"{cmd.name}.log"
        with open(log, "w") as fh:
            rc = subprocess.run(cmd.exec_argv(), cwd=cmd.cwd, stdout=fh, stderr=subprocess.STDOUT).returncode
        return cmd, rc, time.time() - t0, log

    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for cmd, rc, seconds, log in pool.map(one, commands):
            print(f"[mmguard] sweep: {cmd.name}: {'done' if rc == 0 else f'FAILED (status {rc})'} in {seconds:.0f} s "
                  f"(log {log})", flush=True)
            if rc != 0:
                failed += 1
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                print("\n".join(f"    {line}" for line in tail), flush=True)
    return failed


# ------------------------------------------------------------------------------------------------------- slurm
@dataclasses.dataclass
class SlurmOptions:
    partition: Optional[str] = None
    time: str = "60"           # minutes, or [D-]HH:MM[:SS]
    gpus: Optional[int] = None
    cpus: Optional[int] = None
    mem: Optional[str] = None  # GB, or with a unit: 500M, 32G, 1T
    array_parallelism: Optional[int] = None


def minutes(text: str) -> int:
    """A SLURM time limit in whole minutes, read as sbatch reads it: ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M``, ``D-H:M:S`` (seconds round up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    parts = [int(x) for x in m.group(2).split(":")] if m else []
    if not m:
        raise UserError(f"--time {text}: expected minutes (90), M:S, H:M:S or D-H[:M[:S]] (1-12:00:00)")
    if m.group(1) is not None:
        hours, mins, secs = (parts + [0, 0])[:3]
        total = int(m.group(1)) * 1440 + hours * 60 + mins + (secs > 0)
    elif len(parts) == 3:
        total = parts[0] * 60 + parts[1] + (parts[2] > 0)
    else:
        total = parts[0] + (len(parts) == 2 and parts[1] > 0)
    if total < 1:
        raise UserError(f"--time {text}: at least one minute")
    return total


def gigabytes(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([MGT]?)B?", text.strip(), flags=re.IGNORECASE)
    if not m:
        raise UserError(f"--mem {text}: expected a size such as 32G, 500M or 32 (GB)")
    value = float(m.group(1)) * {"": 1, "M": 1 / 1024, "G": 1, "T": 1024}[m.group(2).upper()]
    return max(1, int(round(value)))


def slurm_parameters(options: SlurmOptions, name: str) -> Dict[str, Any]:
    params: Dict[str, Any] = {"name": name, "timeout_min": minutes(options.time), "tasks_per_node": 1, "nodes": 1}
    if options.gpus is not None:
        params["gpus_per_node"] = options.gpus
    if options.cpus is not None:
        params["cpus_per_task"] = options.cpus
    if options.mem is not None:
        params["mem_gb"] = gigabytes(options.mem)
    if options.partition is not None:
        params["slurm_partition"] = options.partition
    if options.array_parallelism is not None:
        params["slurm_array_parallelism"] = options.array_parallelism
    return params


def submit_slurm(commands: Sequence[RunCommand], folder: Path, options: SlurmOptions, name: str = "mmguard",
                 cluster: Optional[str] = None) -> List[Any]:
    """One array job (through ``submitit.AutoExecutor``; ``cluster="local"`` runs it on this machine), one
    task per command. Returns the submitit jobs."""
    try:
        import submitit
    except ImportError:
        raise UserError("--backend slurm needs submitit: pip install 'mmguard[slurm]'") from None
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise UserError("--backend slurm: sbatch is not on PATH (not a SLURM login node?); '--cluster local' "
                        "rehearses the same array job on this machine")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**slurm_parameters(options, name))
    with executor.batch():
        jobs = [executor.submit(cmd) for cmd in commands]
    return jobs


# ------------------------------------------------------------------------------------------------------- wandb
def sweep_out(root: Path, grid: Grid) -> str:
    """The ``out=`` override of a W&B sweep's command: the run folder named from the point's values, which the
    recipe's interpolation fills in (``ROOT/lambda_bind-${attacks.0.lambda_bind}__seed-${seed}``)."""
    short = short_keys([k for k, _ in grid])
    return "out=" + str(Path(root) / "__".join(f"{short[k]}-${{{k}}}" for k, _ in grid))


def wandb_sweep(recipe: str, grid: Grid, root: Path, project: str, entity: Optional[str] = None,
                fixed: Sequence[str] = (), overlays: Sequence[str] = (), extra: Sequence[str] = (),
                draws: Optional[int] = None) -> Dict[str, Any]:
    """The sweep configuration: grid (or random) over the grid's values, maximizing the summary ``delta_acc``
    of each point's group run; each agent run is ``mmguard run`` with the W&B logger on its own folder."""
    command = ["mmguard", "run", str(recipe), *fixed, "logger.name=wandb", sweep_out(root, grid)]
    for overlay in overlays:
        command += ["--overlay", str(overlay)]
    config: Dict[str, Any] = {
        "name": f"{Path(root).name} sweep", "project": project, "method": "grid" if draws is None else "random",
        "metric": {"name": "delta_acc", "goal": "maximize"},
        "parameters": {k: {"values": [yaml.safe_load(v) for v in values]} for k, values in grid},
        "command": [*command, *extra, "${args_no_hyphens}"],
    }
    if entity:
        config["entity"] = entity
    return config


def write_wandb_sweep(config: Dict[str, Any], path: Path, draws: Optional[int] = None) -> List[str]:
    """Write the sweep file; the two commands that start it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    where = [f"--project {config['project']}"] + ([f"--entity {config['entity']}"] if "entity" in config else [])
    count = f" --count {draws}" if draws is not None else ""
    path_of = f"{config.get('entity', '<entity>')}/{config['project']}/<SWEEP_ID>"
    return [f"wandb sweep {' '.join(where)} {shlex.quote(str(path))}",
            f"wandb agent{count} {path_of}   (SWEEP_ID: the id that 'wandb sweep' prints)"]

