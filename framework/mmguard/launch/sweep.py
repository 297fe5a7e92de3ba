"""``mmguard sweep RECIPE --grid key=v1,v2 ... [--random N] [--backend local|slurm|wandb] [--dry-run]``.

A grid of recipe overrides becomes plain ``mmguard run`` commands, one run folder each under ``--out ROOT``
(default: the recipe's ``out``). Every point is resolved first: a bad value stops the sweep before anything is
submitted, in one line naming its grid key. ``local`` runs them here, ``--jobs N`` at a time (logs in
``ROOT/logs/``); ``slurm`` submits one array job through submitit (logs in ``ROOT/slurm/``), whose tasks are
requeued on preemption or timeout and resume their run folders; ``wandb`` writes ``ROOT/sweep.yaml`` for
``wandb sweep`` and ``wandb agent``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from mmguard.core.errors import UserError

BACKENDS = ("local", "slurm", "wandb")


def add_sweep_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("recipe", help="recipe YAML")
    s.add_argument("overrides", nargs="*", help="dot-list overrides applied to every point, e.g. victims.0.epochs=3")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a recipe key and its values (repeatable; the sweep is every combination)")
    s.add_argument("--random", type=int, default=None, metavar="N", help="N distinct points drawn from the grid")
    s.add_argument("--random-seed", type=int, default=0, help="seed of the --random draws (default 0)")
    s.add_argument("--backend", choices=BACKENDS, default="local")
    s.add_argument("--dry-run", action="store_true", help="print one 'mmguard run' command per point and stop")
    s.add_argument("--jobs", type=int, default=1, help="local: runs at a time (default 1)")
    s.add_argument("--out", default=None, metavar="ROOT", help="folder of the run folders (default: the recipe's out)")
    s.add_argument("--overlay", action="append", default=[], metavar="YAML", help="passed to every run")
    s.add_argument("--no-report", action="store_true", help="passed to every run: no report.html")
    g = s.add_argument_group("slurm")
    g.add_argument("--partition", default=None)
    g.add_argument("--time", default="60", help="time limit per task: minutes or D-H:M:S (default 60)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per task")
    g.add_argument("--cpus", type=int, default=None, help="CPUs per task")
    g.add_argument("--mem", default=None, help="memory per task, e.g. 32G")
    g.add_argument("--array-parallelism", type=int, default=None, help="tasks running at once")
    g.add_argument("--wait", action="store_true", help="wait for the array job and report its tasks")
    g.add_argument("--cluster", choices=("slurm", "local"), default="slurm",
                   help="local: the same array through submitit's local executor, on this machine (a rehearsal)")
    g = s.add_argument_group("wandb")
    g.add_argument("--sweep-file", default=None, help="where the W&B sweep YAML goes (default ROOT/sweep.yaml)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from mmguard.launch import backends  # here, not at the top: the CLI builds its parser without torch
    from mmguard.launch.grid import check_points, parse_grid, points, run_argv

    if args.jobs < 1:
        raise UserError(f"--jobs {args.jobs}: at least 1")
    grid = parse_grid(args.grid)
    pts = points(grid, args.random, args.random_seed)
    specs = check_points(args.recipe, pts, args.overrides, args.overlay)
    root = Path(args.out or specs[0].out)
    extra = ["--no-report"] if args.no_report else []
    commands = [backends.RunCommand(p.name, run_argv(args.recipe, p, root, args.overrides, args.overlay, extra),
                                    os.getcwd()) for p in pts]
    if args.backend == "wandb":
        logger = specs[0].logger
        config = backends.wandb_sweep(args.recipe, grid, root, logger.project, logger.entity, args.overrides,
                                      args.overlay, extra, args.random)
        if args.dry_run:
            import yaml

            print(yaml.safe_dump(config, sort_keys=False), end="")
            return 0
        path = Path(args.sweep_file or root / "sweep.yaml")
        start = backends.write_wandb_sweep(config, path, args.random)
        print(f"wrote {path} ({len(pts)} points, method {config['method']}); start it with:")
        for line in start:
            print(f"  {line}")
        return 0
    if args.dry_run:
        for cmd in commands:
            print(cmd)
        return 0
    if args.backend == "local":
        print(f"[mmguard] sweep: {len(commands)} runs under {root}, {args.jobs} at a time", flush=True)
        failed = backends.run_local(commands, args.jobs, root / "logs")
        print(f"[mmguard] sweep: {len(commands) - failed} of {len(commands)} runs done"
              + (f", {failed} failed" if failed else "") + f"; collect them with: mmguard collect {root}")
        return 1 if failed else 0
    options = backends.SlurmOptions(args.partition, args.time, args.gpus, args.cpus, args.mem,
                                    args.array_parallelism)
    jobs = backends.submit_slurm(commands, root / "slurm", options, name=f"mmguard-{root.name}",
                                 cluster=args.cluster)
    print(f"submitted array job {jobs[0].job_id.split('_')[0]}: {len(jobs)} tasks, logs in {root / 'slurm'}")
    return wait_for(jobs, commands) if args.wait else 0


def wait_for(jobs, commands) -> int:
    failed = 0
    for job, cmd in zip(jobs, commands):
        try:
            job.result()
            print(f"[mmguard] sweep: {cmd.name}: done (task {job.job_id})")
        except Exception as err:  # noqa: BLE001 - submitit re-raises the task's failure; report and go on
            failed += 1
            print(f"[mmguard] sweep: {cmd.name}: FAILED (task {job.job_id}): {str(err).strip().splitlines()[-1]}")
    return 1 if failed else 0


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmguard sweep", description=__doc__.split("\n\n")[0])
    add_sweep_arguments(p)
    return p


def sweep_main(argv: Optional[List[str]] = None) -> int:
    """``mmguard sweep`` on its own: a UserError prints one line and returns 2, as the ``mmguard`` command does."""
    args = build_sweep_parser().parse_args(argv)
    try:
        return cmd_sweep(args)
    except UserError as err:
        print(f"mmguard: error: {err}", file=sys.stderr)
        return 2

