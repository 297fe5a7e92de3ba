"""benchmarks/binding_ablation.py --quick: every variant and threat, rows and paired tests over two seeds."""
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("binding_ablation")


def test_variants_are_one_factor_at_a_time():
    variants = load_script().variants()
    labels = [v["label"] for v in variants]
    assert len(labels) == len(set(labels)) == 11
    bph = [(v["lambda_bind"], v["tau"], v["num_layers"]) for v in variants if v["attack"] == "mmguard_bph"]
    assert sorted(bph) == sorted([(0.5, 0.5, 1), (1.0, 0.5, 1), (2.0, 0.5, 1), (1.0, 0.25, 1), (1.0, 1.0, 1),
                                  (1.0, 0.5, 2)])
    crs = [(v["lambda_bind"], v["num_layers"]) for v in variants if v["attack"] == "mmguard_crs"]
    assert sorted(crs) == [(0.5, 1), (1.0, 1), (1.0, 2), (2.0, 1)]


@pytest.mark.slow
def test_binding_ablation_quick(tmp_path):
    out = tmp_path / "ablation.json"
    load_script().main(["--quick", "--seeds", "0", "1", "--jobs", "2", "--json", str(out), "--runs",
                        str(tmp_path / "runs")])
    res = json.loads(out.read_text())
    keys = {"attack", "threat", "victim", "probe", "lambda_bind", "tau", "num_layers", "seed", "accuracy",
            "delta_acc"}
    assert res["rows"] and all(keys <= set(r) for r in res["rows"])
    white = [r for r in res["rows"] if r["threat"] == "whitebox"]
    black = [r for r in res["rows"] if r["threat"] == "blackbox"]
    assert len(white) == 11 * 3 * 2 and len(black) == 3 * 3 * 2  # variants x probes x seeds
    assert {r["lambda_bind"] for r in black} == {0.0, 1.0}
    for r in res["rows"]:
        assert r["delta_acc"] == pytest.approx(r["clean_accuracy"] - r["accuracy"])
    cells = res["summary"]
    assert all(c["n"] == 2 for c in cells)
    assert all((c["vs_lambda0"] is None) == (c["label"] == "multimodal") for c in cells)
    # the protected sets are made once per seed and variant, and shared by both victims
    releases = [p for p in (tmp_path / "runs" / "protected").iterdir() if not p.name.startswith(".")]
    assert len(releases) == 11 * 2
    assert "# Binding ablation" in out.with_suffix(".md").read_text()
    assert res["seeds_vary"].startswith("Seeds vary the initialization of tiny-gemma3") and \
        res["seeds_vary"] in out.with_suffix(".md").read_text()  # the black-box victim's init follows the seed
