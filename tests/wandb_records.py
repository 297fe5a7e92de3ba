"""Read offline W&B runs back from their ``run-<id>.wandb`` files, without a server.

The file is a LevelDB-style log (7-byte file header ``:W&B``, 0xBEE1, version 0; then 32 KiB blocks of records,
each a 7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) of protobuf ``Record`` messages, which the
installed wandb package defines (wandb.proto.wandb_internal_pb2).
"""
import dataclasses
import json
import struct
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:  # not written yet
        return
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a W&B transaction log"
    pos, parts = HEADER.size, b""
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = RECORD.unpack_from(data, pos)
        pos += RECORD.size
        if kind == 0:  # zero fill up to the next block
            pos += left - RECORD.size
            continue
        if pos + length > len(data):  # being written
            return
        chunk = data[pos:pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        elif kind == LAST:
            yield parts + chunk


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclasses.dataclass
class OfflineRun:
    path: Path
    run_id: str
    name: str
    group: str
    job_type: str
    sweep_id: str
    config: Dict[str, Any]
    summary: Dict[str, Any]
    history: List[Dict[str, Any]]
    artifacts: List[str]
    exit_code: Any

    def table(self, key: str) -> Dict[str, Any]:
        """A logged wandb.Table: {"columns": [...], "data": [[...], ...]}."""
        return json.loads((self.path.parent / "files" / self.summary[f"{key}/path"]).read_text())


def read_run(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    run = None
    config: Dict[str, Any] = {}
    summary: Dict[str, Any] = {}
    history: List[Dict[str, Any]] = []
    artifacts: List[str] = []
    exit_code = None
    for raw in raw_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "summary":
            summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            artifacts.append(record.artifact.name)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    config.pop("_wandb", None)
    if run is None:
        return OfflineRun(Path(path), "", "", "", "", "", config, summary, history, artifacts, None)
    return OfflineRun(Path(path), run.run_id, run.display_name, run.run_group, run.job_type, run.sweep_id, config,
                      summary, history, artifacts, exit_code)


def read_finished_run(path: Path, timeout: float = 30.0) -> OfflineRun:
    """The run once its file holds the exit record: W&B's writer flushes the file after ``finish()`` returns
    (measured: right after it, a run's file was sometimes only its 7-byte header)."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(path)
        if run.exit_code is not None:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: no exit record after {timeout:.0f} s")
        time.sleep(0.1)


def offline_runs(wandb_dir: Path) -> List[OfflineRun]:
    return [read_finished_run(p) for p in sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))]
