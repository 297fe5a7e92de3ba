"""The mix curve: protection left against the protected fraction, from a recipe's mix probes, as numbers
(mix_curve.json) and a figure in the report."""
import json

import yaml

from mmguard.report.html import write_report
from mmguard.report.summary import mix_curve, mix_fractions

CFG = {"probes": [{"name": "none", "label": "none"}, {"name": "mix", "label": "mix_0.25", "fraction": 0.25},
                  {"name": "mix", "label": "mix_0.5", "fraction": 0.5}, {"name": "jpeg", "label": "jpeg"}]}


def rows():
    out = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for probe, delta in (("none", 0.8), ("mix_0.25", 0.1), ("mix_0.5", 0.3), ("jpeg", 0.5)):
            out.append({"attack": "clean", "victim": "tiny-llava/full", "probe": probe, "accuracy": 0.9,
                        "delta_acc": 0.0, "seed": seed})
            out.append({"attack": "em", "victim": "tiny-llava/full", "probe": probe, "accuracy": 0.9 - delta - shift,
                        "delta_acc": delta + shift, "seed": seed})
    return out


def test_the_curve_from_the_recipe_s_mix_probes():
    assert mix_fractions(CFG) == {"none": 1.0, "mix_0.25": 0.25, "mix_0.5": 0.5}
    with_one = {"probes": CFG["probes"] + [{"name": "mix", "label": "all", "fraction": 1.0}]}
    assert "none" not in mix_fractions(with_one)  # a mix of fraction 1 stands for the release as it is
    curve = mix_curve(rows(), CFG)
    assert [(c["attack"], c["victim"]) for c in curve["curves"]] == [("em", "tiny-llava/full")]
    points = curve["curves"][0]["points"]
    assert [(p["fraction"], p["probe"], p["n"]) for p in points] == [(0.25, "mix_0.25", 2), (0.5, "mix_0.5", 2),
                                                                      (1.0, "none", 2)]
    assert [round(p["delta_acc"], 6) for p in points] == [0.15, 0.35, 0.85]
    assert round(points[0]["delta_acc_std"], 6) == round((2 * 0.05 ** 2) ** 0.5, 6)  # sample std over the seeds
    assert mix_curve(rows(), {"probes": [{"name": "none"}, {"name": "jpeg"}]}) is None  # one fraction: no curve


def test_the_report_draws_it_and_writes_the_numbers(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"recipe": "mix_curve", "seeds": [0, 1], "status": "complete",
                                                       "rows": rows()}))
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "recipe.yaml").write_text(yaml.safe_dump(CFG))
    page = write_report(tmp_path, attention=False).read_text()
    assert "chart-mix" in page and (tmp_path / "figures" / "mix_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "mix_curve.json").read_text()) == mix_curve(rows(), CFG)
