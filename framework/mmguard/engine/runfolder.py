"""Run folders: the unit of resume, and the promise that nothing the user made is lost.

``--out DIR`` is claimed before any work: a data folder (or a folder inside one) is never written into; an
empty or missing folder becomes this recipe's run; a folder already holding this recipe's run (its marker file)
is resumed; anything else is refused unless ``--overwrite``, which moves the old folder aside (never deletes it).
Leftovers of a killed run (temporary files and folders of interrupted atomic writes) are cleaned on the next
start; folders are made world-readable. Only rank 0 writes.

One process writes a folder at a time (``engine/claim.py``): a second is refused before it touches anything, and
the leftovers of another live writer (a shard's, beside ours) are not cleaned. A resume that could not read its
state (a file cut short or altered, ``engine/readback.py``) is refused unless ``--overwrite``, which then moves
the folder aside like a foreign one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterable, Optional

from mmguard.core.errors import UserError
from mmguard.core.io import atomic_write_json
from mmguard.engine import claim as writer_claim
from mmguard.engine import distributed
from mmguard.engine.readback import first_unreadable

MARKER = ".mmguard.json"
# what our atomic writes leave behind when killed: ".name.XXXX.tmp" files, ".name.XXXXXXXX" folders, backups
_TMP_FILE = re.compile(r"^\..+\.tmp$")
_TMP_DIR = re.compile(r"^\..+\.(old-\d+|[A-Za-z0-9_]{8})$")


def data_folders(data_params: dict) -> list:
    """The folders a data spec reads from (files' folders, image roots)."""
    folders = []
    for key in ("train", "test", "path", "image_root"):
        value = data_params.get(key)
        if isinstance(value, str) and value:
            p = Path(value).expanduser()
            folders.append(p if p.is_dir() else p.parent)
    return folders


class RunFolder:
    def __init__(self, path: Path, recipe: str, kind: str, inputs: Iterable[Path] = (), overwrite: bool = False,
                 writer: Optional[Path] = None):
        self.path, self.recipe, self.kind = Path(path), recipe, kind
        self.inputs = [Path(p) for p in inputs]
        self.overwrite = overwrite
        self.writer = Path(writer) if writer is not None else self.path  # the folder this process claims

    def marker(self) -> Optional[dict]:
        path = self.path / MARKER
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError):
            return None

    def check(self) -> str:
        """What claiming the folder would do ("new", "resume" or "replace"); refuses before anything is written."""
        out = self.path.resolve()
        for folder in self.inputs:
            data = folder.resolve()
            if out == data or data in out.parents:
                raise UserError(f"--out {self.path}: this is the data folder {folder} (or inside it); input data is "
                                "never written into: choose another output folder")
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder")
        if not out.exists() or not any(p.name != writer_claim.CLAIM for p in out.iterdir()):
            return "new"
        lead = distributed.rank() == 0  # the other ranks start later, beside rank 0: its claim is theirs
        for folder in dict.fromkeys([self.path, self.writer]) if lead else ():
            writer_claim.refuse_if_taken(folder)
        mark = self.marker()
        if mark is not None and mark.get("recipe") == self.recipe and mark.get("kind") == self.kind:
            broken = first_unreadable(self.path)
            if broken is None:
                return "resume"
            if not self.overwrite:
                raise broken
        if self.overwrite:
            for folder in [self.path, *self.path.glob("*/"), *self.path.glob("*/*/")] if lead else ():
                writer_claim.refuse_if_taken(folder)  # a live shard's or seed's writer inside: not moved away
            return "replace"
        what = (f"the {mark.get('kind')} output of recipe '{mark.get('recipe')}'" if mark is not None
                else "files that mmguard did not write")
        raise UserError(f"--out {self.path} already holds {what}; use another folder, or --overwrite (the old "
                        f"folder is kept, renamed to {self.path.name}.replaced-<time>)")

    def claim(self) -> str:
        """Check, then (rank 0) make the folder this recipe's: move a replaced folder aside, write the marker,
        clean leftovers of a killed run."""
        action = self.check()
        if distributed.rank() != 0:
            return action
        if action == "replace":
            aside = self.path.with_name(f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, aside)
            print(f"[mmguard] --overwrite: the old {self.path} is kept as {aside}")
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o755)
        if action != "resume":  # the marker first: a kill before the claim leaves a folder that resumes
            atomic_write_json(self.path / MARKER, {"recipe": self.recipe, "kind": self.kind,
                                                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.writer.mkdir(parents=True, exist_ok=True)
        writer_claim.acquire(self.writer)  # refuses a writer that got in since check()
        if action == "resume":
            clean_leftovers(self.path)
        return action

    def release(self) -> None:
        """This process is done writing the folder (rank 0's claim removed; a later writer needs none)."""
        if distributed.rank() == 0:
            writer_claim.release(self.writer)


def clean_leftovers(root: Path) -> None:
    """Remove the temporary files and folders our atomic writes leave when a run is killed mid-write."""
    for dirpath, dirnames, filenames in os.walk(root):
        claim = writer_claim.read(Path(dirpath))
        if claim and not writer_claim.ours(claim) and writer_claim.alive(claim):
            dirnames.clear()  # another live writer's folder (a shard's): its temporary files are in use
            continue
        for name in filenames:
            if _TMP_FILE.match(name):
                Path(dirpath, name).unlink(missing_ok=True)
        for name in list(dirnames):
            if _TMP_DIR.match(name):
                shutil.rmtree(Path(dirpath, name), ignore_errors=True)
                dirnames.remove(name)
