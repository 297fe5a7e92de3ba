"""A pool of worker processes for benchmarks that run many small fits: tasks with dependencies, protections
first, then the longest ready task. A task is a protection (``protect_task``: one release, resumable) or the
rows of a cell recipe (``cell_task``: one victim, one probe, some attacks, in its own run folder, with the
protected sets passed in). Used by threat_matrix.py and binding_ablation.py.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple


@dataclasses.dataclass
class Task:
    """One piece of the matrix for a worker: a protection, or the rows of one (threat, victim, probe) cell --
    its clean fit first (``clean``), then its attacks' fits once their protected sets exist."""

    id: str
    fn: Callable
    args: tuple
    deps: Set[str]
    cost: float
    first: bool = False  # protections go first: every attack fit waits for one
    rank: Optional[int] = None  # a lower rank goes before (e.g. a seed's tasks before the next seed's)


def protect_task(cfg, label: str, folder: Path) -> Dict:
    """Protect the threat's train set with attack ``label`` into ``folder`` (resumable; read back if done)."""
    from mmguard.engine.preflight import load_data
    from mmguard.engine.protect import protect

    a = cfg.attack(label)
    train = load_data(cfg.data)["train"]
    ps = protect(a, train, folder, state_dir=folder.parent / ".state" / folder.name, trainer=cfg.trainer)
    return {"surrogates": ps.surrogates, "psnr": ps.summary["psnr"], "ssim": ps.summary["ssim"],
            "linf_max_255": ps.summary.get("linf_max_255"), "protect_seconds": ps.summary["seconds"],
            "rounds": ps.summary["rounds"]}


def cell_task(cfg, out: Path, reuse: Sequence[Path]) -> Dict:
    """The rows of one cell recipe (one victim, one probe), in its own run folder; protected sets and clean fits
    from the folders ``reuse``. Run again on the same folder, finished rows are kept (the clean fit of the first
    pass)."""
    from mmguard.engine.runner import Runner

    t0 = time.time()
    runner = Runner(cfg, str(out), reuse=list(reuse))
    res = runner.run()
    return {"rows": res["rows"], "seconds": round(time.time() - t0, 1)}


def cell_spec(cfg, victim, probe, attacks):
    return dataclasses.replace(cfg, victims=[victim], probes=[probe], attacks=list(attacks))


def fit_cost(cfg, victim, probe) -> float:
    """A fit's relative cost, for ordering the queue (longest first keeps the pool's tail short)."""
    f = victim.finetune
    cost = f.epochs * max(1, cfg.data.params.get("n_train", 400) // max(1, f.batch_size))
    cost *= 1 + (f.adv_steps or 0) if f.adv_eps else 1
    if probe.name == "ueraser":
        cost *= 1 + probe.params.get("copies", 3) / 2
    return float(cost)


def protection_tasks(cfgs, folder: Path) -> Tuple[List[Task], Dict[Tuple[str, str], str]]:
    """One task per distinct (attack spec, train set) over the recipes, releasing into ``folder``; and the map
    (recipe name, attack label) -> the id of the task that makes its release."""
    from mmguard.engine.preflight import load_data
    from mmguard.engine.protect import protection_hash

    tasks: List[Task] = []
    keys: Dict[Tuple[str, str], str] = {}
    for cfg in cfgs:
        train = load_data(cfg.data)["train"]
        for a in cfg.attacks:
            key = protection_hash(a, train)
            task_id = f"protect:{key}"
            keys[(cfg.name, a.label)] = task_id
            if all(t.id != task_id for t in tasks):
                tasks.append(Task(task_id, protect_task, (cfg, a.label, folder / f"{a.label}-{key[:8]}"), set(),
                                  cost=1e9, first=True))
    return tasks, keys


def cell_tasks(cfg, victim, probe, attacks, out: Path, protected: Path, keys: Dict[Tuple[str, str], str],
               tag: str, shares: Optional["Shared"] = None) -> List[Task]:
    """A cell's clean fit, then (once it and the releases it needs are done) its attacks' fits, both in run
    folder ``out`` (the second pass keeps the first's clean row). ``shares``: an earlier cell whose clean fit is
    this one's too (``engine/fitkey.py``): this cell's clean task waits for it and reads its row back; its attacks'
    task waits for that cell's too, whose fits are this cell's as well when the probe leaves the protected sets
    as they are (``whitespace``; read back then, fitted otherwise)."""
    cost = fit_cost(cfg, victim, probe)
    reuse = [protected] + ([shares.out] if shares else [])
    clean = Task(f"clean:{tag}", cell_task, (cell_spec(cfg, victim, probe, []), out, reuse),
                 {f"clean:{shares.tag}"} if shares else set(), 1.0 if shares else cost)
    if not attacks:
        return [clean]
    deps = {clean.id} | {keys[(cfg.name, a.label)] for a in attacks}
    if shares and shares.attacks == [a.label for a in attacks]:
        deps.add(f"attacks:{shares.tag}")
    return [clean, Task(f"attacks:{tag}", cell_task, (cell_spec(cfg, victim, probe, attacks), out, reuse), deps,
                        cost * len(attacks))]


@dataclasses.dataclass
class Shared:
    tag: str           # the cell whose clean fit is shared: its tasks are clean:<tag> and attacks:<tag>
    out: Path          # its run folder
    attacks: List[str]  # the labels of its attacks


class SharedFits:
    """Which cells' clean fits are one computation (``engine/fitkey.py``): the first cell of each fit key makes
    it, the later ones read its row back. The probes are applied to the clean train set here, once per cell."""

    def __init__(self):
        self.first: Dict[str, Shared] = {}
        self._train: Dict[str, list] = {}

    def shares(self, cfg, victim, probe, attacks, out: Path, tag: str) -> Optional[Shared]:
        """The earlier cell whose clean fit is this cell's, or None (this cell fits)."""
        from mmguard.engine.fitkey import fit_hash, probe_plan
        from mmguard.engine.preflight import load_data
        from mmguard.engine.protect import spec_hash

        data = spec_hash({"name": cfg.data.name, **cfg.data.params})
        if data not in self._train:
            self._train[data] = load_data(cfg.data)["train"]
        train = self._train[data]
        key = fit_hash(cfg, victim, train, probe_plan(cfg, probe, train, train))
        if key is None:
            return None
        if key in self.first:
            return self.first[key]
        self.first[key] = Shared(tag, out, [a.label for a in attacks])
        return None


def schedule(tasks: Sequence[Task], jobs: int, threads: int, on_done: Callable[[Task, Dict], None]) -> None:
    """Run ``tasks`` on ``jobs`` processes, each task once its dependencies are done: by rank, then protections
    first, then the ready task with the longest chain ahead of it (``critical_paths``)."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pending = {t.id: t for t in tasks}
    done: Set[str] = set()
    running: Dict = {}
    tail = critical_paths(tasks)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        while pending or running:
            ready = sorted((t for t in pending.values() if t.deps <= done),
                           key=lambda t: (t.rank or 0, not t.first, -tail[t.id]))
            for t in ready[: jobs - len(running)]:
                del pending[t.id]
                running[pool.submit(t.fn, *t.args)] = t
            if not running:
                raise RuntimeError(f"tasks wait on what never runs: {sorted(pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                t = running.pop(fut)
                on_done(t, fut.result())  # a failed task raises here, and the matrix stops
                done.add(t.id)


def task_key(task: Task) -> str:
    """What a task's output depends on: a protection's id is its release's hash already; a cell task's is its
    recipe written out, the samples of its train and test splits, and the tasks it waits on."""
    from mmguard.config.tree import to_tree
    from mmguard.engine.protect import spec_hash

    if task.fn is protect_task:
        return task.id
    cfg = task.args[0]
    return spec_hash({"recipe": to_tree(cfg), "samples": _data_identity(cfg.data), "deps": sorted(task.deps)})


_IDENTITIES: Dict[str, str] = {}


def _data_identity(data) -> str:
    import hashlib

    from mmguard.engine.preflight import load_data
    from mmguard.engine.protect import sample_identity, spec_hash

    spec = spec_hash({"name": data.name, **data.params})
    if spec not in _IDENTITIES:
        digest = hashlib.sha256()
        for split, samples in sorted(load_data(data).items()):
            for s in samples:
                digest.update(f"{split}\0{sample_identity(s)}\n".encode())
        _IDENTITIES[spec] = digest.hexdigest()[:16]
    return _IDENTITIES[spec]


def carry_over(tasks: Sequence[Task], log: Dict[str, Dict]) -> Tuple[List[Task], Dict[str, Dict], Dict[str, str]]:
    """Resume from an earlier run's task log (``{task id: {"key", "out"}}``, as a benchmark's JSON keeps it) when
    its run folders are gone (another machine, a fresh clone): a task whose key is unchanged keeps its output,
    unless a task that waits on it must run (its protected set or clean fit is then needed on disk again, and a
    protection or fit still there is read back by the framework). Returns the tasks to run, the outputs carried
    over and every task's key."""
    keys = {t.id: task_key(t) for t in tasks}
    waiting: Dict[str, List[str]] = {}
    for t in tasks:
        for d in t.deps:
            waiting.setdefault(d, []).append(t.id)
    finished = {t.id for t in tasks if (log.get(t.id) or {}).get("key") == keys[t.id]}
    kept: Set[str] = set()
    grew = True
    while grew:  # from the last tasks back: a task is kept once everything that waits on it is
        grew = False
        for tid in finished - kept:
            if all(w in kept for w in waiting.get(tid, [])):
                kept.add(tid)
                grew = True
    return ([t for t in tasks if t.id not in kept], {tid: log[tid]["out"] for tid in kept}, keys)


def critical_paths(tasks: Sequence[Task]) -> Dict[str, float]:
    """Per task, its cost plus the longest chain of tasks that wait on it: what starting it late delays. A cheap
    task that long fits wait on (a shared clean fit read back) goes early, not last."""
    waiting: Dict[str, List[Task]] = {}
    for t in tasks:
        for d in t.deps:
            waiting.setdefault(d, []).append(t)
    tail: Dict[str, float] = {}

    def length(t: Task) -> float:
        if t.id not in tail:
            tail[t.id] = t.cost + max((length(w) for w in waiting.get(t.id, [])), default=0.0)
        return tail[t.id]

    for t in tasks:
        length(t)
    return tail


def _worker_init(threads: int) -> None:
    import torch

    from mmguard.core.registry import load_plugins

    _die_with_parent()
    torch.set_num_threads(threads)
    load_plugins()


def _die_with_parent() -> None:
    """A killed matrix must not leave its workers running (and writing into its run folders): on Linux the
    kernel sends them SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


