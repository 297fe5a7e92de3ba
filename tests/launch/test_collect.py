"""``mmguard collect``: run folders at several seeds -> mean and sample std (ddof=1) per row, grouped by the
settings that differ between the folders; CSV, Markdown and JSON."""
import csv
import io
import json
import statistics

import pytest

from mmguard.config.recipe import dump, load_recipe
from mmguard.launch.collect import collect, collect_main

RECIPE = """
name: col
data: {name: synthetic, types: [colour], size: 32}
victims: [{name: lora, model: tiny-llava}]
attacks: [{name: mmguard_bph}]
eval: {zero_shot: false}
"""


def write_run(folder, recipe, overrides, rows, status=None):
    spec = load_recipe(recipe, overrides)
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(dump(spec))
    results = {"recipe": spec.name, "seed": spec.seed, "rows": [
        {"attack": a, "victim": "tiny-llava/lora", "probe": "none", "accuracy": acc,
         "delta_acc": None if d is None else d, "psnr": p, "ssim": None} for a, acc, d, p in rows]}
    if status:
        results["status"] = status
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "col.yaml"
    path.write_text(RECIPE)
    return path


def test_mean_and_sample_std_over_seeds(recipe, tmp_path, capsys):
    write_run(tmp_path / "s0", recipe, ["seed=0"], [("clean", 0.9, 0.0, None), ("mmguard_bph", 0.2, 0.7, 35.0)])
    write_run(tmp_path / "s1", recipe, ["seed=1"], [("clean", 0.8, 0.0, None), ("mmguard_bph", 0.5, 0.3, 34.0)])
    table = collect([tmp_path / "s0", tmp_path / "s1"])
    assert table["group_keys"] == []  # only seeds differ (the recipe's, the attack's and the models')
    assert table["std"] == "sample standard deviation (ddof=1)"
    clean, bph = table["rows"]
    assert (clean["attack"], clean["n"], clean["seeds"]) == ("clean", 2, [0, 1])
    assert clean["accuracy_mean"] == pytest.approx(0.85)
    assert clean["accuracy_std"] == pytest.approx(statistics.stdev([0.9, 0.8])) == pytest.approx(0.0707107)
    assert bph["delta_acc_mean"] == pytest.approx(0.5)
    assert bph["delta_acc_std"] == pytest.approx(0.2828427)  # sqrt(((0.7-0.5)^2 + (0.3-0.5)^2) / (2 - 1))
    assert bph["psnr_mean"] == 34.5 and clean["psnr_mean"] is None and bph["ssim_std"] is None

    assert collect_main([str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "table")]) == 0
    md = capsys.readouterr().out
    assert "| mmguard_bph | tiny-llava/lora | none | 2 | 0.350 ± 0.212 | 0.500 ± 0.283 | 34.50 ± 0.71 | - |" in md
    assert "sample standard deviation (ddof=1)" in md
    assert table["seeds_vary"] in md  # what the folders' seeds varied, from their recipes
    assert table["seeds_vary"].startswith("Seeds vary the data draw; the pre-trained twin of tiny-llava; the attacks'")
    assert (tmp_path / "table" / "collect.md").read_text() in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table" / "collect.csv").read_text())))
    assert rows[1]["attack"] == "mmguard_bph" and float(rows[1]["delta_acc_std"]) == pytest.approx(0.2828427)
    assert rows[1]["seeds"] == "0 1" and rows[0]["psnr_mean"] == ""
    assert json.loads((tmp_path / "table" / "collect.json").read_text()) == json.loads(json.dumps(table))


def test_settings_that_differ_become_columns(recipe, tmp_path):
    for name, over, acc in (("a0", ["seed=0"], 0.2), ("a1", ["seed=1"], 0.4), ("b0", ["seed=0",
                                                                                      "attacks.0.lambda_bind=0"], 0.8)):
        write_run(tmp_path / "sweep" / name, recipe, over, [("clean", 0.9, 0.0, None), ("mmguard_bph", acc, 0.1, None)])
    (tmp_path / "sweep" / "logs").mkdir()  # a sweep root holds other folders too
    table = collect([tmp_path / "sweep"])  # a folder of run folders
    assert table["group_keys"] == ["attack.lambda_bind"]
    got = [(r["attack"], r["attack.lambda_bind"], r["n"], r["accuracy_mean"]) for r in table["rows"]]
    # clean does not depend on the attack's settings: its three folders pool
    assert got == [("clean", None, 3, pytest.approx(0.9)), ("mmguard_bph", 1.0, 2, pytest.approx(0.3)),
                   ("mmguard_bph", 0.0, 1, pytest.approx(0.8))]
    assert table["rows"][2]["accuracy_std"] is None


def test_unfinished_and_missing_folders(recipe, tmp_path, capsys):
    write_run(tmp_path / "r", recipe, [], [("clean", 0.5, 0.0, None)], status="running")
    assert collect([tmp_path / "r"])["rows"][0]["n"] == 1
    assert "is not complete (status: running)" in capsys.readouterr().err
    assert collect_main([str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_peak_accuracy_is_collected_when_rows_have_it(recipe, tmp_path):
    for seed, peak in ((0, 0.9), (1, 0.7)):
        write_run(tmp_path / f"s{seed}", recipe, [f"seed={seed}"], [("clean", 0.8, 0.0, None)])
        path = tmp_path / f"s{seed}" / "results.json"
        results = json.loads(path.read_text())
        results["rows"][0].update(peak_accuracy=peak, best_epoch=seed + 2)
        path.write_text(json.dumps(results))
    table = collect([tmp_path / "s0", tmp_path / "s1"])
    assert table["metrics"] == ["accuracy", "delta_acc", "psnr", "ssim", "peak_accuracy", "best_epoch"]
    assert table["rows"][0]["peak_accuracy_mean"] == pytest.approx(0.8) and table["rows"][0]["best_epoch_mean"] == 2.5
    from mmguard.launch.collect import to_csv, to_markdown

    assert "| ssim | peak_accuracy | best_epoch |" in to_markdown(table) and "peak_accuracy_std" in to_csv(table)
