"""A row's flat config: the attack, victim and probe of the row by label (not by list position), the shared
sections, and nothing of the other rows."""
import pytest

from mmguard.config.flatten import flatten, row_config
from mmguard.config.spec import resolve
from mmguard.config.tree import to_tree

TREE = {
    "name": "flat", "seed": 3,
    "victims": [{"name": "lora", "model": "tiny-llava", "pretrained": False, "rank": 4},
                {"name": "full", "model": "tiny-llava", "pretrained": False, "probes": ["none"]}],
    "attacks": [{"name": "random"},
                {"name": "mmguard_bph", "label": "bph", "lambda_bind": 0.5, "R": 2,
                 "surrogates": [{"name": "tiny-llava", "pretrained": False}, "tiny-qwen2_5_vl"]}],
    "probes": [{"name": "none"}, {"name": "jpeg", "quality": 50}],
}


def test_flatten_indexes_lists_of_mappings_only():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 1}, {"e": 2}], "f": None}) == {
        "a.b": 1, "a.c": [1, 2], "d.0.e": 1, "d.1.e": 2, "f": None}


def test_attack_row_holds_its_attack_victim_probe_and_shared_sections():
    spec = resolve(TREE)
    c = row_config(spec, "bph", "tiny-llava/full", "jpeg")
    assert c == row_config(to_tree(spec), "bph", "tiny-llava/full", "jpeg")  # a spec or recipe.yaml's mapping
    assert (c["attack.name"], c["attack.label"], c["attack.lambda_bind"], c["attack.R"]) == (
        "mmguard_bph", "bph", 0.5, 2)
    assert c["attack.surrogate_models"] == "tiny-llava+tiny-qwen2_5_vl"
    assert (c["attack.surrogates.1.name"], c["attack.surrogates.1.seed"], c["attack.seed"]) == (
        "tiny-qwen2_5_vl", 3, 3)
    assert (c["victim.name"], c["victim.label"], c["victim.model"], c["victim.epochs"]) == (
        "full", "tiny-llava/full", "tiny-llava", 10)
    assert "victim.probes" not in c and "victim.rank" not in c
    assert (c["probe.name"], c["probe.quality"], c["seed"], c["recipe"]) == ("jpeg", 50, 3, "flat")
    assert c["data.name"] == "synthetic" and "eval.max_new_tokens" in c and "trainer.accelerator" in c
    assert not any(k.startswith(("attacks.", "victims.", "probes.", "logger.")) for k in c)


def test_reference_and_protection_rows():
    spec = resolve(TREE)
    clean = row_config(spec, "clean", "tiny-llava/lora", "none")
    assert (clean["attack.name"], clean["attack.label"], clean["victim.rank"], clean["probe.name"]) == (
        "clean", "clean", 4, "none")
    assert not any(k.startswith("attack.") and k not in ("attack.name", "attack.label") for k in clean)
    protect = row_config(spec, attack="random")
    assert protect["attack.name"] == "random" and not any(k.startswith(("victim.", "probe.")) for k in protect)
    with pytest.raises(KeyError, match="no attack labelled 'bhp'"):
        row_config(spec, "bhp")
    assert row_config(spec, "finetune", "tiny-llava/lora", "none", strict=False)["attack.label"] == "finetune"
