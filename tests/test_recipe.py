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
    ("victim_recipes: [lora, lroa]\n", [], "victim_recipes.1.*Did you mean 'lora'.*Registered victims: dora"),
    ("victim_recipes: [{name: dora, epoch: 2}]\n", [], "victim_recipes.0.epoch.*allowed keys: name"),
    ("victim_recipes: [{name: qlroa}]\n", [], "victim_recipes.0.name.*qlora"),
    ("", ["victim_recipes=[lora,nope]"], "victim_recipes.1.*Registered victims"),
    ("victims: [{name: lora}, {name: lora}]\n", [], "two victims are labelled 'tiny-llava/lora'"),
    ("victims: [{name: lora, label: '{model}/{nme}'}]\n", [], "victims.0.label.*placeholder"),
    ("probes: [{name: none}, {name: jpeg}]\nvictims: [{name: lora, probes: [jepg]}]\n", [],
     "victims.0.probes.0.*jepg.*allowed: none, jpeg"),
    ("probes: [{name: jpeg}, {name: jpeg}]\n", [], "two probes are labelled 'jpeg'"),
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


def test_victim_recipes_expand_each_victim(tmp_path):
    path = write(tmp_path, "axis.yaml",
                 "victims: [{name: lora, model: tiny-llava, epochs: 2, lr: 0.003},\n"
                 "          {name: lora, model: tiny-gemma3, epochs: 3}]\n"
                 "probes: [{name: none}, {name: jpeg, quality: 75, label: jpeg75}]\n"
                 "victim_recipes: [lora, dora, projector, projector_lora, full,\n"
                 "  {name: lora, label: '{model}/{name}+adv', adv_eps: 8/255, adv_steps: 2, probes: [none]}]\n")
    from mmguard.recipe import dump, victim_label

    cfg = load_recipe(path)
    labels = [victim_label(v) for v in cfg.victims]
    assert labels[:6] == ["tiny-llava/lora", "tiny-llava/dora", "tiny-llava/projector", "tiny-llava/projector_lora",
                          "tiny-llava/full", "tiny-llava/lora+adv"]
    assert labels[6:] == [x.replace("tiny-llava", "tiny-gemma3") for x in labels[:6]]
    assert all(v.epochs == 2 and v.lr == pytest.approx(3e-3) for v in cfg.victims[:6])  # same settings
    adv = cfg.victims[5]
    assert adv.adv_eps == "8/255" and adv.adv_steps == 2 and list(adv.probes) == ["none"]
    assert cfg.victims[0].probes is None and cfg.victims[0].adv_steps == 0
    # a run's saved recipe.yaml validates to the same victims (the axis is expanded once)
    saved = write(tmp_path, "saved.yaml", dump(cfg))
    assert [victim_label(v) for v in load_recipe(saved).victims] == labels


def test_victim_recipes_override_and_single_name(tmp_path):
    path = write(tmp_path, "r.yaml", "victims: [{name: lora, model: tiny-llava}]\n")
    assert [v.name for v in load_recipe(path, ["victim_recipes=[dora,full]"]).victims] == ["dora", "full"]
    assert [v.name for v in load_recipe(path, ["victim_recipes=qlora"]).victims] == ["qlora"]
    assert [v.name for v in load_recipe(path).victims] == ["lora"]


def test_overlays_merge_after_the_recipe(tmp_path):
    base = write(tmp_path, "base.yaml", "name: b\ndata: {name: synthetic, n_train: 8, n_test: 4}\n"
                                        "victims: [{name: lora, epochs: 2}]\n")
    over = write(tmp_path, "over.yaml", "data: {n_train: 16}\nprobes: [{name: rcp}]\nvictim_recipes: [lora, dora]\n")
    cfg = load_recipe(base, ["data.n_test=5"], overlays=[over])
    assert cfg.name == "b" and cfg.data.n_train == 16 and cfg.data.n_test == 5
    assert [p.name for p in cfg.probes] == ["rcp"] and [v.name for v in cfg.victims] == ["lora", "dora"]


def test_threat_recipes_cover_the_axes():
    """whitebox carries the fine-tuning-recipe axis, blackbox every probe of the issue; the matrix overlay
    keeps both."""
    from mmguard.recipe import victim_label

    threat = ROOT / "recipes" / "threat"
    cfg = load_recipe(threat / "whitebox.yaml", overlays=[threat / "matrix.yaml"])
    assert cfg.name == "whitebox" and cfg.logger.name == "none"
    labels = [victim_label(v) for v in cfg.victims]
    for r in ("lora", "dora", "projector", "projector_lora", "full", "qlora", "full+adv"):
        assert f"tiny-llava/{r}" in labels
    cfg = load_recipe(threat / "blackbox.yaml", overlays=[threat / "matrix.yaml"])
    names = {p.name for p in cfg.probes}
    assert {"jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser", "punctuation",
            "case", "whitespace", "rcp_punctuation", "jpeg_case", "blur_whitespace", "mix"} <= names
    assert any(p.name == "jpeg" and p.quality == 75 for p in cfg.probes)
    assert {p.get("mode") for p in cfg.probes if p.name == "iss"} == {"grayscale", "jpeg"}
