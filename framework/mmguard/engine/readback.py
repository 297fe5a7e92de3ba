"""Reading back what a run folder holds to resume from (state, results, manifests), refusing a file that a kill
cut short or that was altered in one line that names it, instead of a JSONDecodeError deep in the work.

Writes are atomic (``core/io.py``), so such a file is not ours to repair: it is never deleted; ``--overwrite``
moves the whole folder aside and starts afresh (``engine/runfolder.py``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional

from mmguard.core.errors import UserError

# the JSON files a resume reads, and the perturbation files whose size layout.json fixes
STATE_JSON = re.compile(r"^(layout|commit|checkpoint-rank\d+(-r\d+)?|results|manifest)\.json$")
DELTA = re.compile(r"^delta-r\d+\.f16$")
SKIP = {"images", "predictions", "figures", "lightning_logs", "wandb"}  # large folders with nothing to resume from


def unreadable(path: Path, why: str, out: Optional[Path] = None) -> UserError:
    aside = f"{Path(out).name if out is not None else '<out>'}.replaced-<time>"
    return UserError(f"{path}: cut short or altered ({why}); this run folder cannot resume from it: run the same "
                     f"command with --overwrite to start afresh (the old folder is kept, renamed to {aside})")


def read_json(path: Path, out: Optional[Path] = None) -> Any:
    """``path`` parsed, or a UserError naming it (a missing file raises FileNotFoundError as before)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        why = "does not parse: " + (str(err) if path.stat().st_size else "empty")
        raise unreadable(path, why, out) from None


def first_unreadable(root: Path) -> Optional[UserError]:
    """The first state file under ``root`` that a resume could not read (its refusal), or None."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP and not d.startswith("."))
        for name in sorted(filenames):
            if STATE_JSON.match(name):
                try:
                    obj = read_json(Path(dirpath, name), root)
                except UserError as err:
                    return err
                except OSError:
                    continue
                if name == "layout.json" and isinstance(obj, dict) and isinstance(obj.get("total"), int):
                    for delta in (n for n in filenames if DELTA.match(n)):
                        size = Path(dirpath, delta).stat().st_size
                        if 0 < size != 2 * obj["total"]:  # 0: a kill between creating and sizing it
                            return unreadable(Path(dirpath, delta), f"{size} bytes, layout.json says "
                                                                    f"{2 * obj['total']}", root)
    return None
