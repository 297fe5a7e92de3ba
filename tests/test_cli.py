"""The command line: listing, config printing, error messages, and the LLaVA-JSON path of the quickstart."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmguard.cli import main
from mmguard.data.export import export_llava_json
from mmguard.data.synthetic import generate

ROOT = Path(__file__).resolve().parents[1]


def test_list_models_shows_nine_tiny_families(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    for fam in ("qwen3_vl", "qwen2_5_vl", "llava", "mllama", "internvl", "gemma3", "glm4v", "idefics3", "paligemma"):
        assert f"tiny-{fam}\n" in out


def test_print_config_shows_merged_recipe(capsys):
    assert main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "victims.0.epochs=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "name: quickstart" in out


def test_bad_override_is_a_clear_error(capsys):
    assert main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "victims.0.name=lroa", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "victims.0.name" in err and "lora" in err


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "mmguard.cli", "list", "victims"], capture_output=True, text=True)
    assert out.returncode == 0 and "projector_lora" in out.stdout


def test_run_on_unseen_llava_json(tmp_path):
    """The quickstart recipe with data.name=llava_json runs on a data set in DESIGN.md's format."""
    train = generate(24, seed=11, types=("colour",), prefix="a")
    test = generate(8, seed=12, types=("colour",), prefix="b")
    tr = export_llava_json(train, tmp_path / "train")
    te = export_llava_json(test, tmp_path / "test")
    out = tmp_path / "run"
    code = main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "data.name=llava_json", f"data.train={tr}",
                 f"data.test={te}", "attacks=[]",
                 "victims.0.pretrained=false", "victims.0.epochs=1", "eval.zero_shot=false",
                 "trainer.progress_bar=false", "--out", str(out)])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    assert res["rows"][0]["attack"] == "clean" and 0.0 <= res["rows"][0]["accuracy"] <= 1.0
    assert (out / "results.md").exists()


def test_run_crosses_victims_with_probes_and_reuses_protected_sets(tmp_path):
    """attacks x victims x probes: one protected set per attack, one row per (attack, victim, probe), clean
    rows per probe for delta_acc."""
    out = tmp_path / "run"
    code = main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "data.n_train=12", "data.n_test=6",
                 "attacks=[{name: random}]", "probes=[{name: none}, {name: jpeg, quality: 50}, {name: case}]",
                 "victims.0.pretrained=false", "victims.0.epochs=1", "eval.zero_shot=false",
                 "trainer.progress_bar=false", "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["attack"], r["probe"]) for r in rows] == [
        ("clean", "none"), ("random", "none"), ("clean", "jpeg"), ("random", "jpeg"), ("clean", "case"),
        ("random", "case")]
    for clean, attacked in zip(rows[::2], rows[1::2]):
        assert attacked["delta_acc"] == pytest.approx(clean["accuracy"] - attacked["accuracy"])
    assert len(list((out / "protected").iterdir())) == 1
