"""benchmarks/threat_matrix.py --quick: every threat model, probe and fine-tuning recipe, end to end."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PROBES = ("jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser", "punctuation",
          "case", "whitespace", "rcp_punctuation", "jpeg_case", "blur_whitespace", "mix")


def load_script():
    spec = importlib.util.spec_from_file_location("threat_matrix", ROOT / "benchmarks" / "threat_matrix.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_threat_matrix_quick(tmp_path):
    out = tmp_path / "matrix.json"
    load_script().main(["--quick", "--jobs", "1", "--json", str(out), "--runs", str(tmp_path / "runs")])
    res = json.loads(out.read_text())
    assert res["quick"] and res["wall_s"] > 0
    assert [t["threat"] for t in res["threats"]] == ["whitebox", "graybox", "blackbox"]
    md = out.with_suffix(".md").read_text()
    assert "# Threat matrix" in md and "PSNR" in md
    by_threat = {t["threat"]: t for t in res["threats"]}
    assert set(by_threat["whitebox"]["attacks"]) == set(by_threat["graybox"]["attacks"]) == {"mmguard_bph",
                                                                                             "mmguard_crs"}
    assert set(by_threat["blackbox"]["attacks"]) == {"mmguard_bph"}
    blackbox_probes = {p["name"] for p in by_threat["blackbox"]["probes"]}
    assert set(PROBES) <= blackbox_probes  # the whole probe axis, black-box
    for t in res["threats"]:
        assert all(a["psnr"] >= 33 and 0 < a["ssim"] <= 1 for a in t["attacks"].values())
        rows = [r for r in res["rows"] if r["threat"] == t["threat"]]
        cells = {}
        for r in rows:
            cells.setdefault((r["victim"], r["probe"]), set()).add(r["attack"])
        assert all(v == {"clean", *t["attacks"]} for v in cells.values())
        probes = {p.get("label") or p["name"] for p in t["probes"]}
        base = t["victims"][0]["label"]
        assert {p for v, p in cells if v == base} == probes  # the probe axis on the threat's victim
        for r in rows:
            if r["victim"].endswith("/qlora") and not torch.cuda.is_available():
                assert r["accuracy"] is None and "qlora" in r["note"]
            else:
                assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
                if r["attack"] != "clean":
                    assert r["delta_acc"] == pytest.approx(r["clean_accuracy"] - r["accuracy"])
    model = by_threat["whitebox"]["victims"][0]["model"]
    whitebox_cells = {(r["victim"], r["probe"]) for r in res["rows"] if r["threat"] == "whitebox"}
    for recipe in ("lora", "dora", "projector", "projector_lora", "full", "qlora", "full+adv"):
        assert (f"{model}/{recipe}", "none") in whitebox_cells  # the fine-tuning-recipe axis
