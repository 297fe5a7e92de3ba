"""Tracking: one W&B run per row in one group, read back from the offline .wandb files; a requeued job does not
log a finished row again; csv gets the same metrics. The runner is driven by a small harness that calls the
engine functions the way its row loop does, on random-init tiny models at recipes/debug.yaml sizes."""
import csv
import os
from pathlib import Path

import pytest

from mmguard.config.recipe import load_recipe
from mmguard.config.sections import LoggerParams
from mmguard.engine.build import build_model
from mmguard.engine.finetune import evaluate
from mmguard.engine.runner import Runner
from mmguard.engine.tracking import SUMMARY, Tracking, run_id
from wandb_records import offline_runs

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """
name: tracked
data: {name: synthetic, types: [colour], size: 32}
victims: [{name: lora, model: tiny-llava}]
attacks: [{name: random}, {name: em_image, label: em}]
probes: [{name: none}]
eval: {zero_shot: false, max_new_tokens: 2}
logger: {name: wandb, project: mmguard-test, tags: [t], artifacts: true}
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracking")
    recipe = tmp / "tracked.yaml"
    recipe.write_text(RECIPE)
    spec = load_recipe(recipe, overlays=[ROOT / "recipes" / "debug.yaml"])
    out = tmp / "run"
    runner = Runner(spec, str(out))  # the runner tracks every row it runs
    results = runner.run()
    report = out / "report.html"
    report.write_text("<html><body><p>report of tracked</p></body></html>")
    assert runner.tracking.summary_run(results, clean=runner.train, report=report)
    return spec, out, results, offline_runs(out / "wandb")


def test_one_run_per_row_in_one_group(tracked):
    spec, out, results, runs = tracked
    names = [r.name for r in runs]
    assert sorted(names) == sorted(["clean__tiny-llava/lora__none", "protect__random", "random__tiny-llava/lora__none",
                                    "protect__em", "em__tiny-llava/lora__none", "run summary"])
    assert {r.group for r in runs} == {"run"}
    assert len({r.run_id for r in runs}) == len(runs)
    assert all(r.exit_code == 0 for r in runs)
    by_name = {r.name: r for r in runs}
    assert by_name["protect__em"].run_id == run_id(out, "protect__em")
    assert {r.job_type for r in runs} == {"finetune", "protect", "summary"}


def test_row_config_summary_and_curves(tracked):
    spec, out, results, runs = tracked
    row = {r.name: r for r in runs}["em__tiny-llava/lora__none"]
    c = row.config
    assert (c["attack.label"], c["attack.name"], c["attack.R"], c["attack.P"]) == ("em", "em_image", 1, 1)
    assert c["attack.surrogate_models"] == "tiny-llava" and c["attack.surrogates.0.pretrained"] is False
    assert (c["victim.name"], c["victim.model"], c["victim.epochs"], c["probe.name"], c["seed"]) == (
        "lora", "tiny-llava", 1, "none", 0)
    assert c["data.n_train"] == 8 and c["data.name"] == "synthetic"
    expected = next(r for r in results["rows"] if r["attack"] == "em")
    assert row.summary["accuracy"] == pytest.approx(expected["accuracy"])
    assert row.summary["delta_acc"] == pytest.approx(expected["delta_acc"])
    logged = {k for h in row.history for k in h}
    assert {"train/loss_epoch", "test/accuracy", "trainer/global_step"} <= logged
    test_acc = [h["test/accuracy"] for h in row.history if "test/accuracy" in h]
    assert test_acc == [pytest.approx(expected["accuracy"])]


def test_protection_row_history_and_artifact(tracked):
    spec, out, results, runs = tracked
    prot = {r.name: r for r in runs}["protect__em"]
    assert prot.config["attack.name"] == "em_image" and "victim.name" not in prot.config
    rounds = [h for h in prot.history if "round/l_prot" in h]
    assert [h["round"] for h in rounds] == [0] and "round/surrogate_train_accuracy" in rounds[0]
    assert prot.summary["psnr"] > 20 and prot.summary["n"] == 8
    assert "run-em" in prot.artifacts and "run-random" in {r.name: r for r in runs}["protect__random"].artifacts


def test_group_run_holds_table_panels_and_report(tracked):
    spec, out, results, runs = tracked
    group = {r.name: r for r in runs}["run summary"]
    table = group.table("results")
    assert table["columns"][:7] == ["attack", "victim", "probe", "accuracy", "delta_acc", "psnr", "ssim"]
    assert [r[0] for r in table["data"]] == ["clean", "random", "em"]
    assert group.config["attacks.1.name"] == "em_image" and group.config["seed"] == 0
    deltas = [r["delta_acc"] for r in results["rows"] if r["attack"] != "clean"]
    assert group.summary["delta_acc"] == pytest.approx(sum(deltas) / 2)
    samples = group.table("samples")
    assert samples["columns"][:5] == ["attack", "id", "clean", "protected", "perturbation"]
    assert sorted({r[0] for r in samples["data"]}) == ["em", "random"] and len(samples["data"]) == 8
    assert group.summary["panel/em/_type"] == "images/separated" and group.summary["panel/em/count"] == 12
    assert group.summary["report/_type"] == "html-file"


def test_requeued_job_logs_no_finished_row_twice(tracked, tmp_path):
    spec, out, results, runs = tracked
    again = Runner(spec, str(out))  # the same command on the finished folder: nothing is run or logged again
    again.run()
    assert not again.tracking.summary_run(again.results(), clean=again.train)
    assert len(offline_runs(out / "wandb")) == len(runs)
    finished = {r.name for r in runs} | {SUMMARY}  # the runner's done(): rows in results.json, "summary" once complete
    before = len(list((out / "wandb").glob("offline-run-*")))
    tracking = Tracking(spec.logger, out, done=finished.__contains__)
    with tracking.row("clean__tiny-llava/lora__none", "finetune", {}) as run:
        assert run.skipped and run.logger is False
        run.log_summary({"accuracy": 1.0})
    assert not tracking.summary_run(results)
    with tracking.row("another row", "evaluate", {"seed": 0}) as run:  # an unfinished row is logged
        assert not run.skipped
        run.log_summary({"accuracy": 0.25})
    after = offline_runs(out / "wandb")
    assert len(after) == before + 1
    assert [r.summary["accuracy"] for r in after if r.name == "another row"] == [0.25]


AGENT_LAUNCHED = """
import os, sys
from mmguard.config.sections import LoggerParams
from mmguard.engine.tracking import Tracking
tracking = Tracking(LoggerParams(name="wandb", project="mmguard-test"), sys.argv[1])
assert not {"WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"} & set(os.environ)
with tracking.row("clean__x", "finetune", {"seed": 0}) as run:
    run.log_summary({"accuracy": 0.5})
tracking.summary_run({"rows": [{"attack": "a", "accuracy": 0.25, "delta_acc": 0.25}], "config": {"seed": 0}})
"""


def test_a_sweep_agents_run_is_the_summary_run(tmp_path):
    """What ``wandb agent`` launches gets the agent's run id and sweep in its environment; in a fresh process
    (where W&B reads them once), only the summary run takes them, and the rows keep their own runs."""
    import subprocess
    import sys

    folder = tmp_path / "point"
    env = {**os.environ, "WANDB_SWEEP_ID": "swp42", "WANDB_RUN_ID": "agentrun1", "WANDB_MODE": "offline",
           "WANDB_SWEEP_PARAM_PATH": str(tmp_path / "config-agentrun1.yaml")}
    (tmp_path / "config-agentrun1.yaml").write_text("seed:\n  value: 0\n")
    done = subprocess.run([sys.executable, "-c", AGENT_LAUNCHED, str(folder)], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got = {r.name: r for r in offline_runs(folder / "wandb")}
    assert (got["clean__x"].run_id, got["clean__x"].sweep_id) == (run_id(folder, "clean__x"), "")
    assert (got["point summary"].run_id, got["point summary"].sweep_id) == ("agentrun1", "swp42")
    assert got["point summary"].summary["delta_acc"] == 0.25


@pytest.mark.parametrize("name", ["csv", "tensorboard"])
def test_csv_and_tensorboard_get_the_same_metrics(tmp_path, synthetic_small, name):
    import helpers

    tracking = Tracking(LoggerParams(name=name), tmp_path)
    adapter = build_model(load_recipe(ROOT / "recipes" / "quickstart.yaml", ["victims.0.pretrained=false"]
                                        ).victims[0].model)
    with tracking.row("zero_shot__tiny-llava/full", "evaluate", {"victim.name": "full", "seed": 0}) as run:
        res = evaluate(adapter, synthetic_small[:4], max_new_tokens=2, trainer=helpers.CPU, logger=run.logger)
        run.log_summary({"accuracy": res["accuracy"], "delta_acc": None, "note": "x"},
                        history=[{"round": 0, "l_prot": 1.5}])
    folder = tmp_path / "logs" / "zero_shot__tiny-llava" / "full" / "version_0"
    assert "victim.name: full" in (folder / "hparams.yaml").read_text()
    if name == "csv":
        rows = list(csv.DictReader(open(folder / "metrics.csv")))
        logged = {k: float(r[k]) for r in rows for k in r if r[k] and k != "step"}
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(folder))
        events.Reload()
        logged = {k: events.Scalars(k)[-1].value for k in events.Tags()["scalars"]}
    assert logged["test/accuracy"] == pytest.approx(res["accuracy"])
    assert logged["accuracy"] == pytest.approx(res["accuracy"]) and logged["round/l_prot"] == 1.5
    assert "delta_acc" not in logged and "note" not in logged
