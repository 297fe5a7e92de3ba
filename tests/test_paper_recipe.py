"""recipes/paper/regime.yaml names the paper's hub checkpoints and data: with their configs in a Hugging Face cache
(as after `hf download`), `mmguard run --print-config` resolves it, and the threat models come out as it says."""
import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import PAPER_CONFIGS as CONFIGS, fake_hub_cache

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "paper" / "regime.yaml"
def test_the_paper_recipe_resolves_with_the_checkpoints_in_the_cache(tmp_path, monkeypatch):
    env = {**os.environ, "HF_HUB_CACHE": str(fake_hub_cache(tmp_path / "hub")), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "mmguard.cli", "run", str(RECIPE), "--print-config"], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    spec = yaml.safe_load(run.stdout)
    assert [v["model"] for v in spec["victims"]] == list(CONFIGS)
    assert all(v["name"] == "lora" and v["rank"] == 8 for v in spec["victims"])
    assert {a["name"] for a in spec["attacks"]} == {"random", "em_image", "trigger_text", "multimodal",
                                                    "mmguard_bph", "mmguard_crs"}
    assert all([s["name"] for s in a["surrogates"]] == ["Qwen/Qwen2.5-VL-7B-Instruct"] for a in spec["attacks"])
    assert spec["data"]["name"] == "scienceqa"
    from mmguard.models.threat import threat_model

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])  # the run's cache
    surrogates = spec["attacks"][0]["surrogates"]
    labels = [threat_model(surrogates, {"name": v["model"], "pretrained": v["pretrained"], "seed": v["seed"]})
              for v in spec["victims"]]
    assert labels == ["white-box", "black-box", "black-box", "black-box"]  # families from the cached configs


def test_without_the_checkpoints_it_is_refused_naming_the_download(tmp_path):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "mmguard.cli", "run", str(RECIPE), "--print-config"], env=env,
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("mmguard: error: ")
    assert "hf download Qwen/Qwen2.5-VL-7B-Instruct" in run.stderr
