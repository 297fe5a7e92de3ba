"""Two-process DDP on CPU (gloo), through Lightning's own launcher: protection shards samples and writes one
complete release; a run writes its results once; every test sample is predicted exactly once, and evaluation
under DDP equals the one-process result."""
import json
import subprocess
import sys

import pytest
from helpers import CPU

from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.finetune import evaluate, finetune
from mmguard.models import build_model

DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
RECIPE = """name: ddp
data: {name: synthetic, types: [colour], n_train: 20, n_test: 10}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 2, batch_size: 4}]
attacks: [{name: mmguard_bph, R: 2, P: 2, top_k: 4, verify_k: 2, eps_t: 2, batch_size: 4}]
eval: {zero_shot: true, max_new_tokens: 3, batch_size: 4}
trainer: {progress_bar: false}
logger: {name: none}
"""


def mmguard(*args):
    out = subprocess.run([sys.executable, "-m", "mmguard.cli", *args], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text(RECIPE)
    return path


@pytest.mark.slow
def test_protection_under_ddp_writes_one_complete_release(recipe, tmp_path):
    mmguard("protect", str(recipe), "--out", str(tmp_path / "p"), *DDP)
    data = json.loads((tmp_path / "p" / "data.json").read_text())
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    ids = [e["id"] for e in data]
    assert len(ids) == 20 and len(set(ids)) == 20  # every id once
    assert all(0 < r["linf_255"] <= 8 and r["trigger"] for r in manifest["samples"])  # both ranks' samples
    assert [h["round"] for h in manifest["history"]] == [0, 1]


@pytest.mark.slow
def test_run_under_ddp_predicts_each_test_sample_once_and_writes_once(recipe, tmp_path):
    out = mmguard("run", str(recipe), "--out", str(tmp_path / "r"), "--no-report", *DDP)
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["status"] == "complete"
    assert [r["attack"] for r in res["rows"]] == ["zero_shot", "clean", "mmguard_bph"]
    for path in (tmp_path / "r" / "predictions").glob("*.jsonl"):
        ids = [json.loads(line)["id"] for line in path.read_text().splitlines()]
        assert sorted(ids) == sorted(f"test{i:05d}" for i in range(10)), path.name
    assert out.stdout.count("wrote ") == 1  # one rank reports


@pytest.mark.slow
def test_evaluation_under_ddp_equals_one_process(recipe, tmp_path):
    from safetensors.torch import save_model

    # an initialization that learns colours (seed 0 of tiny-llava answers one colour for every image): answers
    # that differ from image to image; the CLI below loads these weights into the recipe's model, strictly
    adapter = build_model("tiny-llava", seed=6)
    finetune(adapter, VICTIMS.build("full"), FinetuneParams(epochs=8, lr=3e-3, batch_size=8),
             generate(48, seed=1, types=("colour",)), seed=0, trainer=CPU)
    save_model(adapter.model, str(tmp_path / "w.safetensors"))
    from mmguard.config.recipe import load_recipe
    from mmguard.engine.preflight import load_data

    test = load_data(load_recipe(recipe).data)["test"]
    alone = evaluate(adapter, test, max_new_tokens=3, batch_size=4, trainer=CPU)
    assert len({p["prediction"] for p in alone["predictions"]}) > 1  # a model that tells images apart
    mmguard("evaluate", str(recipe), "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "e"), *DDP)
    lines = (tmp_path / "e" / "predictions" / "evaluate__tiny-llava_full.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == alone["predictions"]
    row = json.loads((tmp_path / "e" / "results.json").read_text())["rows"][0]
    assert row["accuracy"] == pytest.approx(alone["accuracy"])
