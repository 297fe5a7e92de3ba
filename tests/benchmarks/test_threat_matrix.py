"""benchmarks/threat_matrix.py --quick: every threat model, probe and fine-tuning recipe, end to end."""
import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PROBES = ("jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser", "punctuation",
          "case", "whitespace", "rcp_punctuation", "jpeg_case", "blur_whitespace", "mix", "question_strip", "onion")


def load_script():
    """Imported by name from benchmarks/ (on sys.path, which spawned workers inherit), so that the pool's
    workers can import the task functions too."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("threat_matrix")


@pytest.mark.slow
def test_threat_matrix_quick(tmp_path):
    out = tmp_path / "matrix.json"
    load_script().main(["--quick", "--jobs", "2", "--seeds", "0", "1", "--json", str(out), "--runs",
                        str(tmp_path / "runs")])
    res = json.loads(out.read_text())
    assert res["quick"] and res["wall_s"] > 0 and res["jobs"] == 2
    # white- and gray-box protect alike: one release each for bph and crs, and one for the black-box ensemble
    assert sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "runs" / "protected").iterdir()
                  if not p.name.startswith(".")) == ["mmguard_bph"] * 4 + ["mmguard_crs"] * 2  # 2 seeds
    assert [t["threat"] for t in res["threats"]] == ["whitebox", "graybox", "blackbox"]
    md = out.with_suffix(".md").read_text()
    assert "# Threat matrix" in md and "PSNR" in md and "mean ± sample std over seeds 0, 1" in md
    assert "| threat model |" in md and md.count("Seeds vary the attacks' draws") == 2  # blackbox: inits too
    threats = {t: {r["threat_model"] for r in res["rows"] if r["threat"] == t and r["attack"] != "clean"}
               for t in ("whitebox", "graybox", "blackbox")}
    assert threats == {"whitebox": {"white-box"}, "graybox": {"gray-box"}, "blackbox": {"black-box"}}  # all from init
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
        assert t["seeds"] == [0, 1] and {r["seed"] for r in rows} == {0, 1}
        probes = {p.get("label") or p["name"] for p in t["probes"]}
        base = t["victims"][0]["label"]
        assert {p for v, p in cells if v == base} == probes  # the probe axis on the threat's victim
        for r in rows:
            if r["victim"].endswith("/qlora") and not torch.cuda.is_available():
                assert r["accuracy"] is None and "qlora" in r["note"]
            elif "read back from" in (r.get("note") or ""):
                # a shared fit: read back from the cell of probe none (or blur), not fitted again
                source = r["note"].split("read back from ")[1].split(" ")[0].split(":")[0].split("__")
                same = next(x for x in rows if (x["attack"], x["victim"], x["probe"], x["seed"])
                            == (source[0], source[1], source[2], r["seed"]))
                assert r["seconds"] == 0 and r["accuracy"] == same["accuracy"]
            else:
                assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
                if r["attack"] != "clean":
                    assert r["delta_acc"] == pytest.approx(r["clean_accuracy"] - r["accuracy"])
    shared = {(r["attack"], r["probe"]) for r in res["rows"] if r["threat"] == "blackbox" and r["seconds"] == 0}
    assert {("clean", p) for p in ("mix_0.25", "mix_0.75", "question_strip", "onion", "whitespace",
                                   "blur_whitespace")} <= shared
    assert {("mmguard_bph", "whitespace"), ("mmguard_bph", "blur_whitespace")} <= shared  # tidy text already
    assert not {p for _, p in shared} & {"none", "jpeg_q75", "case", "punctuation", "ueraser", "rcp"}
    model = by_threat["whitebox"]["victims"][0]["model"]
    whitebox_cells = {(r["victim"], r["probe"]) for r in res["rows"] if r["threat"] == "whitebox"}
    for recipe in ("lora", "dora", "projector", "projector_lora", "full", "qlora", "full+adv"):
        assert (f"{model}/{recipe}", "none") in whitebox_cells  # the fine-tuning-recipe axis
