"""A protection killed with SIGKILL at any point resumes, with the same command, to a release that equals an
uninterrupted run's byte for byte; finished rows are not run again; run folders keep what is not theirs."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = """name: resume
data: {name: synthetic, types: [colour], n_train: 24, n_test: 6}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 8}]
attacks: [{name: mmguard_bph, R: 3, P: 2, top_k: 4, verify_k: 2, eps_t: 2, batch_size: 8, checkpoint_every: 1,
           psnr_min: 33}]
trainer: {progress_bar: false}
logger: {name: none}
"""


def release_digest(folder: Path) -> dict:
    """Every released byte (the manifest's per-sample rows and history; its timings differ run to run)."""
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
           for p in [*(folder / "images").glob("*.png"), folder / "data.json", folder / "sharegpt.json"]}
    manifest = json.loads((folder / "manifest.json").read_text())
    out["manifest"] = json.dumps([manifest["samples"], manifest["history"], manifest["hyperparameters"]],
                                 sort_keys=True)
    return out


def protect(recipe: Path, out: Path, kill_when=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mmguard.cli", "protect", str(recipe), "--out", str(out)]
    if kill_when is None:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if kill_when(out / "state"):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
        time.sleep(0.02)
    raise AssertionError(f"the run ended (code {proc.returncode}) before the kill point was reached")


def checkpoint(state: Path):
    try:
        return json.loads((state / "checkpoint-rank0.json").read_text())
    except (OSError, ValueError):
        return None


def committed(state: Path):
    try:
        return json.loads((state / "commit.json").read_text())["round"]
    except (OSError, ValueError, KeyError):
        return None


KILL_POINTS = {
    "inside round 0": lambda s: (c := checkpoint(s)) is not None and c["round"] == 0 and c["batch"] >= 1,
    "at the start of round 1": lambda s: committed(s) == 1,
    "inside round 2": lambda s: (c := checkpoint(s)) is not None and c["round"] == 2 and c["batch"] >= 2,
}


@pytest.mark.slow
def test_killed_protection_resumes_to_the_same_bytes(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    ref = protect(recipe, tmp_path / "reference")
    assert ref.returncode == 0, ref.stderr
    reference = release_digest(tmp_path / "reference")
    assert len(reference) == 24 + 3
    for name, when in KILL_POINTS.items():
        out = tmp_path / name.replace(" ", "_")
        assert protect(recipe, out, kill_when=when) is None
        assert not (out / "manifest.json").exists()  # no half release
        again = protect(recipe, out)
        assert again.returncode == 0, again.stderr
        assert "resuming from its checkpoint" in again.stdout, name
        assert release_digest(out) == reference, name
        assert not (out / "state").exists()  # the state is removed once the release is in place
        modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*")}
        assert modes <= {"0o644", "0o755"}, modes
