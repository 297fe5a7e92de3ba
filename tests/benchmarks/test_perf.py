"""benchmarks/perf.py --quick at the tiny size: every arm runs, and the arms compute the same outputs."""
import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_perf_quick(tmp_path):
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    perf = importlib.import_module("perf")
    out = tmp_path / "perf.json"
    perf.main(["--quick", "--sizes", "tiny", "--json", str(out)])
    res = json.loads(out.read_text())
    pgd = res["pgd"][0]
    assert pgd["size"] == "tiny" and pgd["framework_over_hand_written"] > 0 and pgd["bph_over_em_image"] > 0
    assert res["finetune"]["framework_over_hand_written"] > 0
    assert res["evaluate"]["speedup"] > 0 and res["evaluate_zero_shot"]["speedup"] > 0
    assert res["evaluate_zero_shot"]["mean_answer_words"] > res["evaluate"]["mean_answer_words"]
    assert set(res["targets"]) >= {"a_framework_pgd_over_hand_written<=1.10", "b_bph_over_em_image<=1.25",
                                   "c_finetune_over_hand_written<=1.10", "d_evaluation_speedup>=3"}
