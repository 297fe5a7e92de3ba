"""The quickstart end to end, reduced for CI (fewer samples, two attacks on one round) but still asserting
the science: the clean set is learned, noise in the budget does not protect, MMGuard does, within the budget."""
import json
from pathlib import Path

import pytest

from mmguard.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_reduced(tmp_path):
    out = tmp_path / "qs"
    code = main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "data.n_test=100",
                 "attacks=[{name: random}, {name: mmguard_bph, R: 1, top_k: 8, verify_k: 2, psnr_min: 33}]",
                 "trainer.progress_bar=false", "--no-report", "--out", str(out)])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    rows = {r["attack"]: r for r in res["rows"]}
    assert set(rows) == {"zero_shot", "clean", "random", "mmguard_bph"}
    assert rows["zero_shot"]["accuracy"] <= 0.35
    assert rows["clean"]["accuracy"] >= 0.9                # the faint colours are learned from clean data
    assert abs(rows["random"]["delta_acc"]) <= 0.1         # noise in the budget does not protect
    assert rows["mmguard_bph"]["delta_acc"] >= 0.5         # MMGuard does, even after one round
    assert rows["mmguard_bph"]["psnr"] >= 33 and rows["mmguard_bph"]["surrogates"] == ["tiny-llava"]
    manifest = json.loads((out / "protected" / "mmguard_bph" / "manifest.json").read_text())
    assert manifest["summary"]["linf_max_255"] <= 8 and len(manifest["samples"]) == 400
    assert min(s["psnr"] for s in manifest["samples"]) >= 33
    assert all(s["trigger"] for s in manifest["samples"])
    # the protected data set is readable by the LLaVA-JSON loader and by mmguard finetune
    code = main(["finetune", str(ROOT / "recipes" / "quickstart.yaml"), "--train",
                 str(out / "protected" / "mmguard_bph" / "data.json"), "data.n_train=16", "data.n_test=20",
                 "victims.0.epochs=1", "trainer.progress_bar=false", "--out", str(tmp_path / "ft")])
    assert code == 0
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["rows"][0]["accuracy"] is not None
