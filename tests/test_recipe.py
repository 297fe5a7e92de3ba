from pathlib import Path

import pytest

from mmguard.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_quickstart_recipe_validates():
    cfg = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert cfg.name == "quickstart" and cfg.victims[0].model == "tiny-llava"
    assert [a.name for a in cfg.attacks][:2] == ["random", "em_image"]


def test_every_recipe_in_the_repo_validates():
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        if path.name.startswith("_"):
            continue
        load_recipe(path)


def test_includes_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "seed: 3\ndata: {name: synthetic, n_train: 8, n_test: 4}\n"
                                 "victims: [{name: lora, model: tiny-llava, epochs: 2}]\n")
    child = write(tmp_path, "child.yaml", "include: [base.yaml]\nname: child\ndata: {n_train: 16}\n")
    cfg = load_recipe(child, ["victims.0.epochs=5", "seed=7"])
    assert cfg.data.n_train == 16 and cfg.data.n_test == 4
    assert cfg.victims[0].epochs == 5 and cfg.seed == 7 and cfg.name == "child"
    assert cfg.victims[0].lr == pytest.approx(1e-3)  # schema default filled in


@pytest.mark.parametrize("text, override, needle", [
    ("victims: [{name: lroa}]\n", [], "victims.0.name.*Did you mean 'lora'"),
    ("victims: [{name: lora}]\n", ["victims.0.epochs=abc"], "victims.0.epochs"),
    ("data: {name: synthetic, n_trian: 3}\n", [], "data.n_trian.*allowed: n_train"),
    ("data: {name: nope}\n", [], "data.name.*synthetic"),
    ("victims: [{name: lora, lr_rate: 1}]\n", [], "victims.0.lr_rate.*allowed keys"),
    ("logger: {name: mlflow}\n", [], "logger.name.*csv, tensorboard, wandb"),
    ("attacks: [{name: mmguard_bhp}]\n", [], "attacks.0.name.*mmguard_bph"),
    ("victims: [{name: lora, model: tiny-lava}]\n", [], "victims.0.model.*tiny-llava"),
    ("attacks: [{name: em_image, eps: 4}]\n", [], "attacks.0.*eps.*allowed.*eps_x"),
    ("probes: [{name: jpeg, qualty: 10}]\n", [], "probes.0.*qualty"),
])
def test_errors_name_the_file_key_and_allowed_values(tmp_path, text, override, needle):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecipeError, match=needle) as err:
        load_recipe(path, override)
    assert "bad.yaml" in str(err.value) or "override" in str(err.value)


def test_missing_include_names_the_file(tmp_path):
    path = write(tmp_path, "r.yaml", "include: [nowhere.yaml]\n")
    with pytest.raises(RecipeError, match="nowhere.yaml"):
        load_recipe(path)
