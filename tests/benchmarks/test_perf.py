"""benchmarks/perf.py --quick at the tiny size: every arm runs, and the framework and hand-written arms compute the
same losses and gradients (evaluation: the same predictions, asserted inside the benchmark)."""
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
    agree = pgd["agreement"]  # the PGD objective and its gradient in the pixels
    assert agree["loss"] > 0 and agree["loss_diff"] <= 1e-6 * agree["loss"] and agree["grad_rel_diff"] <= 1e-6
    agree = res["finetune"]["agreement"]  # every step's loss and gradients (AdamW's default weight decay: 6e-5 off)
    assert agree["steps"] == 4 and agree["loss_diff"] <= 1e-6 and agree["grad_rel_diff"] <= 1e-6
    assert res["finetune"]["framework_over_hand_written"] > 0
    assert res["evaluate"]["speedup"] > 0 and res["evaluate_zero_shot"]["speedup"] > 0
    assert res["evaluate_zero_shot"]["mean_answer_words"] > res["evaluate"]["mean_answer_words"]
    assert set(res["targets"]) >= {"a_framework_pgd_over_hand_written<=1.10", "b_bph_over_em_image<=1.25",
                                   "c_finetune_over_hand_written<=1.10", "d_evaluation_speedup>=3"}
