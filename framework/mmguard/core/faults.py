"""Faults of a cluster as one line each, with nothing lost: a signal (SLURM's SIGTERM on preemption, Ctrl-C) and
a full disk.

A signal raises ``Interrupted`` where the main thread is, like a kill, but with the cleanups of the atomic writes
(``core/io.py``) run: the state holds its last checkpoint, which the same command resumes from. (Lightning's own
SIGTERM handling would stop at a batch end with exit status 0, a finished run to a scheduler.) The exit status
is 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a killed command, so that
``mmguard sweep`` and schedulers count the run as not done; its results.json still says ``status: running``.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal asked the run to stop. A BaseException, as KeyboardInterrupt: no ``except Exception`` eats it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.where: List[str] = []  # outermost stage first, filled in by ``stage`` as it passes through

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise(signum, frame) -> None:
    for s in SIGNALS:  # a second signal while the first unwinds would cut its cleanups short
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise(on: bool = True) -> Iterator[None]:
    """Inside, SIGTERM and SIGINT raise ``Interrupted`` (Lightning chains a handler it finds, so also in a fit);
    the handlers before are restored after (``main`` may run inside a test or a notebook)."""
    if not on or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def stage(what: Union[str, Callable[[], str]]) -> Iterator[None]:
    """Name what runs inside, for the message of an interruption there (a callable is asked only then)."""
    try:
        yield
    except Interrupted as err:
        err.where.insert(0, what() if callable(what) else what)
        raise


def no_space(err: BaseException) -> bool:
    """A write that ran out of space: OSError ENOSPC / EDQUOT, or a library's error that wraps one (safetensors
    raises its own type, with the OS error in the text)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text


def _free(folder: Path) -> str:
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "free space unknown"
    unit = "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if free < 1024 or unit == "TB":
            break
        free /= 1024
    return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"


def explain(err: BaseException, out: Optional[str]) -> Optional[Tuple[str, int]]:
    """The one line and exit status of a fault (None for anything else, which keeps its traceback)."""
    if isinstance(err, Interrupted):
        where = ", ".join(err.where) or "start-up"
        return f"interrupted ({err.name}) at {where}; the same command resumes", 128 + err.signum
    if isinstance(err, Exception) and no_space(err):
        name = getattr(err, "filename", None)
        folder = Path(name).parent if name else Path(out or ".")
        return (f"no space left in {folder} ({_free(folder)}): the last checkpoint there is intact; free some "
                "space, then the same command resumes"), 2
    return None
