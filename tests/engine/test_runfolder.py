"""Run folders: a re-run resumes (finished rows are not run again), finetune adds rows and never replaces them,
leftovers of a killed run are cleaned, files are world-readable, a foreign folder is only ever moved aside."""
import json

import pytest

from mmguard.cli import main
from mmguard.engine import runner as runner_module

RECIPE = """name: folder
data: {name: synthetic, types: [colour], n_train: 8, n_test: 4}
victims: [{name: full, model: tiny-llava, pretrained: false, epochs: 1, batch_size: 4}]
attacks: [{name: random}]
eval: {zero_shot: false, max_new_tokens: 2}
trainer: {progress_bar: false}
logger: {name: none}
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "folder.yaml"
    path.write_text(RECIPE)
    return path


def rows(out):
    return json.loads((out / "results.json").read_text())


def test_rerun_skips_finished_rows_and_finetune_adds_rows(recipe, tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out), "--no-report"]) == 0
    first = rows(out)
    assert first["status"] == "complete" and [r["attack"] for r in first["rows"]] == ["clean", "random"]
    assert all(r["spec_hash"] for r in first["rows"])
    (out / ".results.json.abc123.tmp").write_text("half a write")  # what a kill mid-write leaves
    (out / "protected" / ".random.ab12cd34").mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("a finished row was run again")

    monkeypatch.setattr(runner_module.Runner, "fit_and_eval", no_work)
    assert main(["run", str(recipe), "--out", str(out), "--no-report"]) == 0
    assert rows(out)["rows"] == first["rows"]
    assert not (out / ".results.json.abc123.tmp").exists() and not (out / "protected" / ".random.ab12cd34").exists()
    monkeypatch.undo()
    # a changed victim setting re-runs the rows it changes, and reuses the protected set it does not change
    manifest = out / "protected" / "random" / "manifest.json"
    made = manifest.stat().st_mtime_ns
    assert main(["run", str(recipe), "--out", str(out), "--no-report", "victims.0.lr=0.002"]) == 0
    changed = rows(out)["rows"]
    assert [r["spec_hash"] != f["spec_hash"] for r, f in zip(changed, first["rows"])] == [True, True]
    assert manifest.stat().st_mtime_ns == made
    assert main(["finetune", str(recipe), "--out", str(out), "--train",
                 str(out / "protected" / "random" / "data.json"), "--name", "outside"]) == 0
    assert [r["attack"] for r in rows(out)["rows"]] == ["clean", "random", "outside"]  # added, none replaced
    modes = {oct(p.stat().st_mode & 0o777) for p in out.rglob("*")}
    assert modes <= {"0o644", "0o755"}


def test_overwrite_moves_a_foreign_folder_aside(recipe, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    assert main(["run", str(recipe), "--out", str(out), "--no-report"]) == 2
    assert (out / "notes.txt").read_text() == "the user's"
    assert main(["run", str(recipe), "--out", str(out), "--no-report", "--overwrite"]) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("mine.replaced-")]
    assert len(aside) == 1 and (aside[0] / "notes.txt").read_text() == "the user's"
    assert rows(out)["status"] == "complete"
