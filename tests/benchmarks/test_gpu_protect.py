"""benchmarks/gpu_protect.py runs end to end at its tiny size on CPU (the real sizes need a GPU), and its real
sizes build the published parameter counts (on the meta device: no memory)."""
import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_protect", ROOT / "benchmarks" / "gpu_protect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_protect_smoke_and_sizes(tmp_path):
    script = load_script()
    res = script.main(["--size", "tiny", "--device", "cpu", "--steps", "1", "--json", str(tmp_path / "g.json")])
    row = res["rows"][0]
    assert row["step_s"] > 0 and row["images_per_s"] > 0 and row["batch"] == 8
    assert json.loads((tmp_path / "g.json").read_text())["rows"][0]["size"] == "tiny"
    counts = {s: sum(p.numel() for p in script.build(s, "meta", torch.bfloat16).model.parameters()) / 1e9
              for s in ("3b", "7b")}
    assert 3.7 < counts["3b"] < 3.8 and 8.2 < counts["7b"] < 8.4  # Qwen2.5-VL-3B: 3.75B, -7B: 8.29B
