"""One writer per folder: a claim file (pid, host, the process's start) made atomically when a writer starts and
removed when it ends, so a second ``mmguard`` on the same ``--out`` is refused instead of both writing one state.

The claim is created by ``os.link`` of a complete temporary file (it fails if the claim exists: no two writers,
and no reader sees half a claim). A claim whose process is gone (its pid dead, or reused by a process that started
later) on this host is taken over; one from another host is refused, since its liveness cannot be known here.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Dict, Optional

from mmguard.core.errors import UserError

CLAIM = ".mmguard.claim"


def _started(pid: int) -> Optional[str]:
    """The start time of process ``pid`` (Linux /proc; None elsewhere): a pid reused later differs in it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _me() -> Dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid())}


def read(folder: Path) -> Optional[Dict]:
    try:
        return json.loads((Path(folder) / CLAIM).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: claimed by no live process we can name


def alive(claim: Dict) -> bool:
    """Whether the claim's process may still be running (always, for another host's)."""
    if not claim or claim.get("host") != socket.gethostname():
        return bool(claim)
    pid = int(claim.get("pid", 0))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    started = _started(pid)
    return started is None or claim.get("started") in (None, started)


def ours(claim: Optional[Dict]) -> bool:
    me = _me()
    return bool(claim) and all(claim.get(k) == me[k] for k in ("pid", "host"))


def refuse_if_taken(folder: Path) -> None:
    """A live claim of another process on ``folder``: refused in one line."""
    claim = read(folder)
    if claim and not ours(claim) and alive(claim):
        hint = ("wait for it to end, or choose another --out" if claim.get("host") == socket.gethostname() else
                f"if that process is gone, remove {Path(folder) / CLAIM}")
        raise UserError(f"{folder} is being written by pid {claim.get('pid')} on {claim.get('host')}; {hint}")


def acquire(folder: Path) -> None:
    """Claim ``folder`` for this process (again is fine), taking over a dead one's claim; released at exit."""
    folder = Path(folder)
    path = folder / CLAIM
    fd, tmp = tempfile.mkstemp(prefix=f"{CLAIM}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(_me(), fh)
        os.chmod(tmp, 0o644)
        for _ in range(3):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                claim = read(folder)
                if ours(claim):
                    return
                refuse_if_taken(folder)
                # a dead process's (or unreadable) claim: moved to a name of our own first, so that of two
                # processes taking it over only one removes it
                stale = folder / f"{CLAIM}.stale-{os.getpid()}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(path, stale)
                    if read_file(stale) != claim:  # another taker's live claim after all: put it back
                        with contextlib.suppress(FileExistsError):
                            os.link(stale, path)
                    stale.unlink()
        else:
            refuse_if_taken(folder)
            raise UserError(f"{folder}: cannot claim it ({path} keeps changing); is another mmguard starting?")
    finally:
        Path(tmp).unlink(missing_ok=True)
    atexit.register(release, folder)


def read_file(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def release(folder: Path) -> None:
    """Remove this process's claim on ``folder`` (another's is left alone)."""
    if ours(read(folder)):
        Path(folder, CLAIM).unlink(missing_ok=True)
