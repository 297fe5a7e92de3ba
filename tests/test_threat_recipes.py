"""The threat-model recipes run end to end (reduced: random-init models, a few samples, one round)."""
from pathlib import Path

import pytest

from mmguard.engine.runner import Runner
from mmguard.recipe import load_recipe, probe_label, victim_label

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("threat", ["whitebox", "graybox", "blackbox"])
def test_threat_recipe_reduced(threat, tmp_path):
    cfg = load_recipe(ROOT / "recipes" / "threat" / f"{threat}.yaml",
                      ["data.n_train=8", "data.n_test=4", "trainer.progress_bar=false"])
    for v in cfg.victims:
        v.pretrained, v.epochs = False, 1
    for a in cfg.attacks:
        a.R, a.P, a.top_k, a.verify_k, a.eps_t, a.batch_size = 1, 1, 2, 1, 2, 8
        if "surrogates" in a:
            a.surrogates = [{"name": s if isinstance(s, str) else s.name, "pretrained": False}
                            for s in a.surrogates]
    res = Runner(cfg, str(tmp_path)).run()
    rows = res["rows"]
    attacks = {a.name for a in cfg.attacks}
    assert attacks >= {"mmguard_bph"} and {r["attack"] for r in rows} == {"clean"} | attacks
    assert {r["victim"] for r in rows} == {victim_label(v) for v in cfg.victims}
    for v in cfg.victims:  # every victim x its probes has its clean row (qlora: a note instead of numbers)
        probes = v.probes or [probe_label(p) for p in cfg.probes]
        assert {r["probe"] for r in rows if r["victim"] == victim_label(v) and r["attack"] == "clean"} == set(probes)
    surrogates = {tuple(r["surrogates"]) for r in rows if r["attack"] != "clean" and r.get("surrogates")}
    victims = {v.model for v in cfg.victims}
    if threat == "whitebox":
        assert surrogates == {tuple(victims)}
    if threat == "blackbox":
        assert all(not (set(s) & victims) for s in surrogates) and all(len(s) == 2 for s in surrogates)
    assert len(list((tmp_path / "protected").iterdir())) == len(attacks)  # computed once, reused by every victim
