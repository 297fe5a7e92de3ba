"""Faults of a cluster, each refused in one line with nothing lost: a SIGTERM mid-protection (exit 143, the same
command resumes to the bytes of an uninterrupted run), a second writer on a live run folder, a state file cut
short, a full disk."""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmguard.cli import main
from mmguard.core import io
from mmguard.engine import claim, state as state_module
from mmguard.engine.runfolder import MARKER, RunFolder, clean_leftovers

RECIPE = """name: faults
data: {name: synthetic, types: [colour], n_train: 8, n_test: 2}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 4}]
attacks: [{name: mmguard_bph, R: 2, P: 1, top_k: 2, verify_k: 1, eps_t: 2, batch_size: 4, checkpoint_every: 1}]
trainer: {progress_bar: false}
logger: {name: none}
"""


def release_digest(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    files = [*(folder / "images").glob("*.png"), folder / "data.json", folder / "sharegpt.json"]
    return {**{p.name: p.read_bytes() for p in files},
            "manifest": json.dumps([manifest["samples"], manifest["history"]], sort_keys=True)}


def checkpoint(state: Path):
    try:
        return json.loads((state / "checkpoint-rank0.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text(RECIPE)
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("mmguard: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_sigterm_stops_in_one_line_a_second_writer_is_refused_and_the_rerun_resumes(recipe, tmp_path, capsys):
    assert main(["protect", str(recipe), "--out", str(tmp_path / "reference")]) == 0
    reference = release_digest(tmp_path / "reference")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mmguard.cli", "protect", str(recipe), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while (c := checkpoint(out / "state")) is None or c["batch"] < 1:  # inside round 0, a batch checkpointed
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.02)
    # a second writer while the first is alive: refused before it touches anything
    capsys.readouterr()
    assert main(["protect", str(recipe), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == (f"mmguard: error: {out} is being written by pid {proc.pid} on {socket.gethostname()}; wait "
                    "for it to end, or choose another --out")
    os.kill(proc.pid, signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err
    line = one_error_line(err)
    assert line.startswith("mmguard: error: interrupted (SIGTERM) at protection 'mmguard_bph' round ")
    assert line.endswith("; the same command resumes")
    assert not (out / "manifest.json").exists() and (out / "state" / "commit.json").is_file()
    assert not (out / claim.CLAIM).exists()  # released on the way out

    # a state file cut short (a kill -9 on a file system without atomic renames): refused, naming it
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "state" / "layout.json").write_text("")
    assert main(["protect", str(recipe), "--out", str(broken)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"mmguard: error: {broken / 'state' / 'layout.json'}: cut short or altered")
    assert "--overwrite" in line and "broken.replaced-<time>" in line
    assert (broken / "state" / "layout.json").exists()  # nothing deleted
    assert RunFolder(broken, "faults", "protect", overwrite=True).check() == "replace"  # the way out: moved aside

    assert main(["protect", str(recipe), "--out", str(out)]) == 0  # the same command resumes ...
    assert "resuming from its checkpoint" in capsys.readouterr().out
    assert release_digest(out) == reference  # ... to the bytes of an uninterrupted run
    assert not (out / claim.CLAIM).exists()


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(recipe, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = state_module.atomic_write_json
    saved = []

    def full_after_four(path, obj, indent=2):  # the fifth state write (inside round 0) finds the disk full
        if len(saved) >= 4:
            with io.atomic_write(path, "w") as fh:
                fh.write('{"round": ')
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(path)
        return real(path, obj, indent=indent)

    monkeypatch.setattr(state_module, "atomic_write_json", full_after_four)
    assert main(["protect", str(recipe), "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"mmguard: error: no space left in {out} (")
    assert " free): the last checkpoint there is intact" in line
    for path in saved:
        json.loads(Path(path).read_text())  # every file written before is whole
    assert not list(out.rglob("*.tmp"))  # the cut write left nothing
    assert not (out / claim.CLAIM).exists()


def test_claims_live_dead_and_other_hosts(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / MARKER).write_text(json.dumps({"recipe": "r", "kind": "protect"}))
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (folder / claim.CLAIM).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                      "started": claim._started(sleeper.pid)}))
        with pytest.raises(Exception, match=f"being written by pid {sleeper.pid} on "):
            RunFolder(folder, "r", "protect").check()
        with pytest.raises(Exception, match="being written by pid"):
            claim.acquire(folder)
        # a shard beside ours: its temporary files are not cleaned while its writer lives
        shard = folder / "shards" / "1"
        shard.mkdir(parents=True)
        os.replace(folder / claim.CLAIM, shard / claim.CLAIM)
        (shard / ".data.json.abc.tmp").write_text("in use")
        (folder / ".results.json.abc.tmp").write_text("a dead write")
        clean_leftovers(folder)
        assert (shard / ".data.json.abc.tmp").exists() and not (folder / ".results.json.abc.tmp").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same pid, now dead: taken over
    os.replace(shard / claim.CLAIM, folder / claim.CLAIM)
    claim.acquire(folder)
    assert claim.read(folder)["pid"] == os.getpid()
    claim.acquire(folder)  # again, by the same process: fine
    claim.release(folder)
    assert not (folder / claim.CLAIM).exists()
    # another host's claim is never taken over (its process cannot be seen from here)
    (folder / claim.CLAIM).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(Exception, match="on elsewhere; if that process is gone, remove"):
        claim.acquire(folder)
    assert json.loads((folder / claim.CLAIM).read_text())["host"] == "elsewhere"
