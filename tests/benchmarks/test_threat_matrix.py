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
    load_script().main(["--quick", "--json", str(out), "--runs", str(tmp_path / "runs")])
    res = json.loads(out.read_text())
    assert res["quick"] and res["wall_s"] > 0
    assert [t["threat"] for t in res["threats"]] == ["whitebox", "graybox", "blackbox"]
    md = out.with_suffix(".md").read_text()
    assert "# Threat matrix" in md and "PSNR" in md
    for t in res["threats"]:
        assert set(t["attacks"]) == {"mmguard_bph", "mmguard_crs"}
        assert all(a["psnr"] > 20 and 0 < a["ssim"] <= 1 for a in t["attacks"].values())
        rows = [r for r in res["rows"] if r["threat"] == t["threat"]]
        names = {p.get("label") or p["name"]: p["name"] for p in t["probes"]}
        assert set(PROBES) <= set(names.values())
        cells = {}
        for r in rows:
            cells.setdefault((r["victim"], r["probe"]), set()).add(r["attack"])
        assert all(v == {"clean", "mmguard_bph", "mmguard_crs"} for v in cells.values())
        lora = [v["label"] for v in t["victims"] if v["name"] == "lora" and not v["adv_steps"]]
        for victim in lora:  # the whole probe axis on LoRA
            assert {p for v, p in cells if v == victim} == set(names)
        models = {v["model"] for v in t["victims"]}
        for model in models:  # the fine-tuning-recipe axis, adversarial training among it
            for recipe in ("dora", "projector", "projector_lora", "full", "qlora", "lora+adv"):
                assert (f"{model}/{recipe}", "none") in cells
        for r in rows:
            if r["victim"].endswith("/qlora") and not torch.cuda.is_available():
                assert r["accuracy"] is None and "qlora" in r["note"]
            else:
                assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
                if r["attack"] != "clean":
                    assert r["delta_acc"] == pytest.approx(r["clean_accuracy"] - r["accuracy"])
