"""Protection state on disk: perturbations, triggers and adapters, checkpointed so that a killed run resumes to the
very bytes an uninterrupted run would have released.

Perturbations of round r live in ``delta-r{r}.f16``: raw float16, one (C, H, W) block per sample at a fixed offset
(``layout.json`` holds ids, shapes and offsets, so ``np.memmap`` reads it too), 2 bytes per sub-pixel, read and
written per batch with positional I/O (nothing mapped, nothing held: memory stays flat as the data grows). A round
reads only round r's file, which is never written during the round, and writes each sample's new perturbation
once into round r+1's file; so re-running any batch of a round after a kill writes the same bytes again. Class-wise
perturbations (a few per data set) live in the checkpoint itself.

Each rank keeps its own checkpoint (its samples' triggers, its position); a round's end is committed by rank 0
after every rank has written its own, and only then are older files removed. Random numbers are derived from
(seed, round, batch, ...) rather than carried along, so no RNG state needs saving.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmguard.core.io import atomic_path, atomic_write_json
from mmguard.engine.readback import read_json  # a file cut short or altered: refused in one line naming it

LAYOUT = "layout.json"
COMMIT = "commit.json"


def derived_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a seed, a round, a batch, ...): independent streams without carried state."""
    return int(np.random.SeedSequence([int(p) & ((1 << 63) - 1) for p in parts]).generate_state(2, np.uint64)[0]
               & ((1 << 63) - 1))


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


class DeltaFile:
    """One round's perturbations: float16 blocks at the offsets of ``layout`` (id -> (offset, shape))."""

    def __init__(self, path: Path, layout: Dict[str, Tuple[int, Tuple[int, ...]]], total: int):
        self.path, self.layout, self.total = Path(path), layout, total

    def create(self) -> "DeltaFile":
        """An all-zero file of the right size (sparse: no block is written until used)."""
        with open(self.path, "wb") as fh:
            fh.truncate(self.total * 2)
        return self

    def read(self, key: str) -> torch.Tensor:
        offset, shape = self.layout[key]
        n = int(np.prod(shape))
        with open(self.path, "rb") as fh:
            data = os.pread(fh.fileno(), n * 2, offset * 2)
        return torch.from_numpy(np.frombuffer(data, dtype=np.float16).astype(np.float32).reshape(shape))

    def write_many(self, blocks: Iterable[Tuple[str, torch.Tensor]]) -> None:
        with open(self.path, "r+b") as fh:
            for key, value in blocks:
                offset, shape = self.layout[key]
                arr = value.detach().to("cpu", torch.float16).numpy().reshape(-1)
                if tuple(value.shape) != tuple(shape):
                    raise ValueError(f"perturbation of {key!r} has shape {tuple(value.shape)}, expected {shape}")
                os.pwrite(fh.fileno(), arr.tobytes(), offset * 2)

    def sync(self) -> None:
        with open(self.path, "r+b") as fh:
            os.fsync(fh.fileno())


class StateDir:
    """The state folder of one protection run: layout, round files, adapters, per-rank checkpoints, commits."""

    def __init__(self, path: Path, rank: int = 0):
        self.path, self.rank = Path(path), rank
        self.path.mkdir(parents=True, exist_ok=True)
        self._layout: Optional[Dict[str, Tuple[int, Tuple[int, ...]]]] = None
        self._total = 0

    # -- layout --------------------------------------------------------------------------------------------
    def write_layout(self, keys: Sequence[str], shapes: Sequence[Tuple[int, ...]], fingerprint: str) -> None:
        """Offsets in the given key order (every rank computes the same); written once by rank 0."""
        layout, offset = {}, 0
        for k, s in zip(keys, shapes):
            layout[k] = (offset, tuple(int(x) for x in s))
            offset += int(np.prod(s))
        self._layout, self._total = layout, offset
        if self.rank == 0:
            atomic_write_json(self.path / LAYOUT, {"fingerprint": fingerprint, "total": offset, "dtype": "float16",
                                                   "keys": list(keys), "shapes": [list(s) for s in shapes]}, indent=None)

    def fingerprint(self) -> Optional[str]:
        path = self.path / LAYOUT
        return read_json(path)["fingerprint"] if path.is_file() else None

    def deltas(self, round_: int) -> DeltaFile:
        assert self._layout is not None, "write_layout first"
        return DeltaFile(self.path / f"delta-r{round_}.f16", self._layout, self._total)

    # -- adapters ------------------------------------------------------------------------------------------
    def adapter_path(self, round_: int, surrogate: int) -> Path:
        return self.path / f"lora-r{round_}-s{surrogate}.safetensors"

    def save_adapters(self, round_: int, tensors: List[Dict[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        if self.rank != 0:
            return
        for m, t in enumerate(tensors):
            with atomic_path(self.adapter_path(round_, m)) as tmp:
                save_file({k: v.detach().cpu().contiguous() for k, v in t.items()}, str(tmp))

    def load_adapters(self, round_: int, n: int) -> List[Dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        return [load_file(str(self.adapter_path(round_, m))) for m in range(n)]

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _ckpt(self, round_: Optional[int] = None) -> Path:
        tail = "" if round_ is None else f"-r{round_}"
        return self.path / f"checkpoint-rank{self.rank}{tail}.json"

    def save(self, record: Dict[str, Any], round_end: bool = False) -> None:
        """This rank's position. ``round_end``: the state at the start of ``record['round']``, kept apart until
        rank 0 commits that round (``commit``), so a kill between two ranks' writes cannot split them."""
        atomic_write_json(self._ckpt(record["round"] if round_end else None), record, indent=None)

    def commit(self, round_: int, extra: Optional[Dict[str, Any]] = None) -> None:
        if self.rank == 0:
            atomic_write_json(self.path / COMMIT, {"round": round_, **(extra or {})}, indent=None)

    def committed(self) -> Optional[Dict[str, Any]]:
        path = self.path / COMMIT
        return read_json(path) if path.is_file() else None

    def load(self) -> Optional[Dict[str, Any]]:
        """This rank's latest consistent position: the committed round's start, or a later checkpoint within it."""
        commit = self.committed()
        candidates = []
        if commit is not None:
            start = self._ckpt(commit["round"])
            if start.is_file():
                candidates.append(read_json(start))
        current = self._ckpt()
        if current.is_file():
            rec = read_json(current)
            if commit is None or rec["round"] >= commit["round"]:
                candidates.append(rec)
        if not candidates:
            return None
        return max(candidates, key=lambda r: (r["round"], r.get("batch", 0)))

    def clean(self, round_: int) -> None:
        """After round ``round_`` is committed (rank 0): remove what no checkpoint can need any more: older round
        files and checkpoints, adapters older than the previous round's (a run without re-initialization starts
        from them), and writes a kill cut short."""
        if self.rank != 0:
            return
        for p in self.path.iterdir():
            m = re.match(r"^(delta|lora|classwise-rank\d+|checkpoint-rank\d+)-r(\d+)", p.name)
            if m:
                keep = round_ - 1 if m.group(1) == "lora" else round_
                if int(m.group(2)) < keep:
                    p.unlink(missing_ok=True)
            elif p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)

    def all_triggers(self, world: int, round_: int) -> Dict[str, Optional[str]]:
        """Every rank's triggers at the committed start of ``round_`` (for the release, by rank 0)."""
        out: Dict[str, Optional[str]] = {}
        for r in range(world):
            rec = read_json(self.path / f"checkpoint-rank{r}-r{round_}.json")
            out.update(rec["triggers"])
        return out

    def classwise(self) -> Path:
        return self.path / f"classwise-rank{self.rank}.safetensors"
