"""Recipes: includes, overlays, overrides, the resolved spec tree, and errors that name the file and key."""
from pathlib import Path

import pytest

from mmguard.config.recipe import dump, load_recipe
from mmguard.config.spec import resolve
from mmguard.config.tree import to_tree
from mmguard.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_quickstart_recipe_resolves():
    spec = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    assert spec.name == "quickstart" and spec.victims[0].model.name == "tiny-llava"
    assert [a.name for a in spec.attacks][:2] == ["random", "em_image"]
    em = spec.attacks[1]
    assert em.loop.alpha == pytest.approx(0.8 / 255) and em.loop.P == 20 and em.loop.R == 3  # Huang's, then recipe
    bph = spec.attack("mmguard_bph")
    assert bph.params["tau"] == 0.5 and bph.loop.psnr_min == 33 and bph.loop.verify_k == 4
    # white-box by default: the surrogate is the victim's model, same seed
    assert bph.surrogates == [spec.victims[0].model] and bph.weights == [1.0]


def test_every_recipe_in_the_repo_resolves_and_round_trips(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from helpers import fake_hub_cache

    # recipes/paper names hub checkpoints: resolving them reads their configs from the cache, as after hf download
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(fake_hub_cache(tmp_path / "hub")))
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        if path.name.startswith("_") or path.name in ("debug.yaml", "matrix.yaml"):
            continue
        spec = load_recipe(path)
        again = load_recipe(write(tmp_path, "again.yaml", dump(spec)))
        assert again == spec, path
        assert resolve(to_tree(spec)) == spec


def test_includes_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "seed: 3\ndata: {name: synthetic, n_train: 8, n_test: 4}\n"
                                 "victims: [{name: lora, model: tiny-llava, epochs: 2}]\n")
    child = write(tmp_path, "child.yaml", "include: [base.yaml]\nname: child\ndata: {n_train: 16}\n")
    spec = load_recipe(child, ["victims.0.epochs=5", "seed=7"])
    assert spec.data.params["n_train"] == 16 and spec.data.params["n_test"] == 4
    assert spec.victims[0].finetune.epochs == 5 and spec.seed == 7 and spec.name == "child"
    assert spec.victims[0].finetune.lr == pytest.approx(1e-3)  # declared default filled in
    assert spec.victims[0].model.seed == 7  # the recipe seed, resolved once


@pytest.mark.parametrize("text, override, needle", [
    ("victims: [{name: lroa}]\n", [], r"victims\.0\.name.*Did you mean 'lora'"),
    ("victims: [{name: lora}]\n", ["victims.0.epochs=abc"], r"victims\.0\.epochs': expected an integer"),
    ("victims: [{name: lora, epochs: 0}]\n", [], r"victims\.0\.epochs': 0 is outside >= 1"),
    ("victims: [{name: lora, lr: -1}]\n", [], r"victims\.0\.lr': -1\.0 is outside > 0"),
    ("victims: [{name: full, rank: 4}]\n", [], r"victims\.0\.rank': not a key of victim 'full'"),
    ("victims: [{name: full, adv_eps: 8/255}]\n", [], r"victims\.0\.adv_steps'.*needs adv_steps >= 1"),
    ("data: {name: synthetic, n_trian: 3}\n", [], r"data\.n_trian': not a parameter.*allowed: n_train"),
    ("data: {name: nope}\n", [], r"data\.name.*synthetic"),
    ("victims: [{name: lora, lr_rate: 1}]\n", [], r"victims\.0\.lr_rate': not a key"),
    ("logger: {name: mlflow}\n", [], r"logger\.name': 'mlflow' is not one of csv, tensorboard, wandb"),
    ("attacks: [{name: mmguard_bhp}]\n", [], r"attacks\.0\.name.*mmguard_bph"),
    ("victims: [{name: lora, model: tiny-lava}]\n", [], r"victims\.0\.model.*tiny-llava"),
    ("victims: [{name: lora, model: no/such-model}]\n", [], r"victims\.0\.model.*local Hugging Face cache"),
    ("attacks: [{name: em_image, eps: 4}]\n", [], r"attacks\.0\.eps': not a key of attack 'em_image'.*eps_x"),
    ("attacks: [{name: em_image, eps_x: -0.1}]\n", [], r"attacks\.0\.eps_x': -0\.1 is outside \[1/255, 1\]"),
    ("attacks: [{name: em_image, eps_x: 2}]\n", [], r"attacks\.0\.eps_x': 2\.0 is outside"),
    ("attacks: [{name: mmguard_bph, eps_t: 0}]\n", [], r"attacks\.0\.eps_t': 0 is outside \[1, 20\]"),
    ("attacks: [{name: mmguard_bph, eps_t: 100}]\n", [], r"attacks\.0\.eps_t': 100 is outside"),
    ("attacks: [{name: mmguard_bph, tau: 0}]\n", [], r"attacks\.0\.tau': 0\.0 is outside \(0, 1\]"),
    ("attacks: [{name: mmguard_bph, tau: 1.5}]\n", [], r"attacks\.0\.tau': 1\.5 is outside"),
    ("attacks: [{name: em_image, R: 0}]\n", [], r"attacks\.0\.R': 0 is outside >= 1"),
    ("attacks: [{name: em_image, top_k: 8}]\n", [], r"attacks\.0\.top_k': applies to attacks with a text trigger"),
    ("attacks: [{name: mmguard_crs, tau: 0.3}]\n", [], r"attacks\.0\.tau': not a key of attack 'mmguard_crs'"),
    ("attacks: [{name: em_image, psnr_min: 25}]\n", [], r"attacks\.0\.psnr_min': 25\.0 dB never binds"),
    ("attacks: [{name: mmguard_bph, top_k: 4, verify_k: 8}]\n", [], r"verify_k': 8 exceeds top_k"),
    ("attacks: [{name: em_image, surrogates: [tiny-lava]}]\n", [], r"attacks\.0\.surrogates\.0\.name.*tiny-llava"),
    ("attacks: [{name: em_image, surrogates: [tiny-llava], weights: [1, 2]}]\n", [],
     r"attacks\.0\.weights': 2 weights for 1 surrogates"),
    ("attacks: [{name: em_image, eot: [{name: case}]}]\n", [], r"attacks\.0\.eot\.0': probe 'case' does not change"),
    ("attacks: [{name: em_image, eot: [{name: mix}]}]\n", [], r"attacks\.0\.eot\.0': probe 'mix' has no differ"),
    ("probes: [{name: jpeg, qualty: 10}]\n", [], r"probes\.0\.qualty': not a parameter of probe 'jpeg'"),
    ("probes: [{name: jpeg, quality: 0}]\n", [], r"probes\.0\.quality': 0 is outside \[1, 100\]"),
    ("probes: [{name: blur, kernel: 4}]\n", [], r"probes\.0\.kernel': 4 is not odd"),
    ("probes: [{name: rcp, pad: reflect, fraction: 0.3}]\n", [], r"probes\.0\.fraction': pad 'reflect' needs"),
    ("probes: [{name: combo, probes: [{name: jpeg, quality: 500}]}]\n", [], r"probes\.0\.probes': item 0:.*quality"),
    ("victim_recipes: [lora, lroa]\n", [], r"victim_recipes\.1.*Did you mean 'lora'"),
    ("victim_recipes: [{name: dora, epoch: 2}]\n", [], r"victim_recipes\.0\.epoch': not a victim key"),
    ("", ["victim_recipes=[lora,nope]"], r"victim_recipes\.1.*Registered victims"),
    ("victims: [{name: lora}, {name: lora}]\n", [], r"two victims are labelled 'tiny-llava/lora'"),
    ("victims: [{name: lora, label: '{model}/{nme}'}]\n", [], r"victims\.0\.label.*placeholder"),
    ("probes: [{name: none}, {name: jpeg}]\nvictims: [{name: lora, probes: [jepg]}]\n", [],
     r"victims\.0\.probes\.0': 'jepg'.*allowed: none, jpeg"),
    ("probes: [{name: jpeg}, {name: jpeg}]\n", [], r"two probes are labelled 'jpeg'"),
    ("attacks: [{name: random, label: a/b}]\n", [], r"attacks\.0\.label': 'a/b' is not a usable label"),
    ("seed: -1\n", [], r"key 'seed': -1 is negative"),
    ("trainer: {devices: two}\nfoo: 1\n", [], r"key 'foo': not a recipe section"),
])
def test_errors_name_the_file_key_and_allowed_values(tmp_path, text, override, needle):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(UserError, match=needle) as err:
        load_recipe(path, override)
    assert "bad.yaml" in str(err.value) or "override" in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_include_names_the_file(tmp_path):
    path = write(tmp_path, "r.yaml", "include: [nowhere.yaml]\n")
    with pytest.raises(UserError, match="nowhere.yaml"):
        load_recipe(path)


def test_victim_recipes_expand_each_victim(tmp_path):
    path = write(tmp_path, "axis.yaml",
                 "victims: [{name: lora, model: tiny-llava, epochs: 2, lr: 0.003, rank: 4},\n"
                 "          {name: lora, model: tiny-gemma3, epochs: 3}]\n"
                 "probes: [{name: none}, {name: jpeg, quality: 75, label: jpeg75}]\n"
                 "victim_recipes: [lora, dora, projector, projector_lora, full,\n"
                 "  {name: lora, label: '{model}/{name}+adv', adv_eps: 8/255, adv_steps: 2, probes: [none]}]\n")
    spec = load_recipe(path)
    labels = [v.label for v in spec.victims]
    assert labels[:6] == ["tiny-llava/lora", "tiny-llava/dora", "tiny-llava/projector", "tiny-llava/projector_lora",
                          "tiny-llava/full", "tiny-llava/lora+adv"]
    assert labels[6:] == [x.replace("tiny-llava", "tiny-gemma3") for x in labels[:6]]
    assert all(v.finetune.epochs == 2 and v.finetune.lr == pytest.approx(3e-3) for v in spec.victims[:6])
    # the base victim's own parameter carries over where the recipe declares it
    assert spec.victims[1].params["rank"] == 4 and spec.victims[4].params == {}
    adv = spec.victims[5]
    assert adv.finetune.adv_eps == pytest.approx(8 / 255) and adv.finetune.adv_steps == 2 and adv.probes == ["none"]
    saved = write(tmp_path, "saved.yaml", dump(spec))  # a run's recipe.yaml resolves to the same victims
    assert load_recipe(saved) == spec


def test_overlays_and_each(tmp_path):
    base = write(tmp_path, "base.yaml", "name: b\ndata: {name: synthetic, n_train: 80, n_test: 40}\n"
                                        "victims: [{name: lora, epochs: 20}]\n"
                                        "attacks: [{name: trigger_text, R: 3}, {name: em_image, R: 5}]\n"
                                        "probes: [none, {name: ueraser}, {name: jpeg}]\n")
    spec = load_recipe(base, ["data.n_test=5"], overlays=[ROOT / "recipes" / "debug.yaml"])
    assert spec.data.params["n_train"] == 8 and spec.data.params["n_test"] == 4  # the overlay wins
    assert spec.victims[0].finetune.epochs == 1 and not spec.victims[0].model.pretrained
    assert [a.loop.R for a in spec.attacks] == [1, 1] and spec.attacks[1].loop.P == 1
    assert not spec.attacks[0].surrogates[0].pretrained
    assert spec.probes[1].params == {"copies": 2} and spec.probes[2].params == {"quality": 75}  # where declared


def test_print_config_is_the_resolved_tree(tmp_path):
    spec = load_recipe(ROOT / "recipes" / "quickstart.yaml")
    text = dump(spec)
    assert "eps_x: 0.0313" in text and "label: tiny-llava/full" in text and "surrogates:" in text
