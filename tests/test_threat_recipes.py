"""The threat-model recipes run end to end, shrunk by the debug overlay (random-init models, a few samples, one
round), and each threat model pairs its victims and surrogates as it says."""
from pathlib import Path

import pytest

from mmguard.config.recipe import load_recipe
from mmguard.engine.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "recipes" / "debug.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("threat", ["whitebox", "graybox", "blackbox"])
def test_threat_recipe_reduced(threat, tmp_path):
    spec = load_recipe(ROOT / "recipes" / "threat" / f"{threat}.yaml", overlays=[DEBUG])
    res = Runner(spec, str(tmp_path)).run()
    rows = res["rows"]
    attacks = {a.label for a in spec.attacks}
    assert attacks >= {"mmguard_bph"} and {r["attack"] for r in rows} == {"clean"} | attacks
    assert {r["victim"] for r in rows} == {v.label for v in spec.victims}
    for v in spec.victims:  # every victim x its probes has its clean row (qlora: a note instead of numbers)
        probes = {p.label for p in spec.probes_of(v)}
        assert {r["probe"] for r in rows if r["victim"] == v.label and r["attack"] == "clean"} == probes
    surrogates = {tuple(r["surrogates"]) for r in rows if r["attack"] != "clean" and r.get("surrogates")}
    victims = {v.model.name for v in spec.victims}
    if threat == "whitebox":
        assert surrogates == {tuple(victims)}
    if threat == "blackbox":
        assert all(not (set(s) & victims) for s in surrogates) and all(len(s) == 2 for s in surrogates)
    assert len(list((tmp_path / "protected").iterdir())) == len(attacks)  # computed once, reused by every victim
