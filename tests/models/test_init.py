"""Initial weights: a model's random init derives from its seed mixed with its name, so no two registered models
share an initial tensor, and the threat recipes' victims start from their surrogates' weights exactly when the
threat model says so (white-box) and never otherwise."""
import hashlib
from pathlib import Path

import pytest
import torch

from mmguard.config.recipe import load_recipe
from mmguard.core.registry import MODELS
from mmguard.models import build_model
from mmguard.models.zoo import init_seed

ROOT = Path(__file__).resolve().parents[2]
TINY = MODELS.names("tiny-*")
# every threat recipe and the access its attacker has to the victim's weights
THREATS = {"whitebox": "white", "graybox": "gray", "blackbox": "black"}


def drawn_tensors(name, seed):
    """{(shape, digest of the values): entry name} for the entries of a model's state dict that were drawn at
    random (constant ones, such as norm weights of ones or zero biases, are the same in every model by design)."""
    out = {}
    for key, value in build_model(name, seed=seed).model.state_dict().items():
        flat = value.detach().flatten()
        if flat.numel() == 0 or bool((flat == flat[0]).all()):
            continue
        digest = hashlib.sha256(flat.float().numpy().tobytes()).hexdigest()
        out[(tuple(value.shape), digest)] = key
    return out


def test_init_seed_is_stable_and_mixes_the_name():
    assert init_seed("tiny-llava", 0) == init_seed("tiny-llava", 0)
    assert init_seed("tiny-llava", 0) == 6942463630219422739  # no salted hash: the same on every run and machine
    assert len({init_seed(n, s) for n in TINY for s in range(3)}) == 3 * len(TINY)


def test_no_two_registered_models_share_an_initial_tensor():
    owner = {}
    for name in TINY:
        tensors = drawn_tensors(name, 0)
        assert len(tensors) >= 10, name
        for key, entry in tensors.items():
            assert key not in owner, f"{name}.{entry} starts equal to {owner[key][0]}.{owner[key][1]}"
            owner[key] = (name, entry)


@pytest.mark.parametrize("name", ["tiny-llava", "tiny-qwen2_5_vl"])
def test_same_name_and_seed_same_weights_other_seed_other_weights(name):
    a, b = build_model(name, seed=4).model.state_dict(), build_model(name, seed=4).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not set(drawn_tensors(name, 4)) & set(drawn_tensors(name, 5))


def threat_recipes():
    found = sorted(p for p in (ROOT / "recipes" / "threat").glob("*.yaml")
                   if not p.name.startswith("_") and p.stem != "matrix")  # _base: included; matrix: an overlay
    assert {p.stem for p in found} == set(THREATS), "classify every threat recipe in THREATS"
    return found


@pytest.mark.parametrize("path", threat_recipes(), ids=lambda p: p.stem)
def test_threat_recipes_pair_victims_and_surrogates_as_their_threat_model_says(path):
    spec = load_recipe(path)
    threat = THREATS[path.stem]
    victims = {(v.model.name, v.model.seed) for v in spec.victims}
    surrogates = {(s.name, s.seed) for a in spec.attacks for s in a.surrogates}
    assert victims and surrogates
    if threat == "white":  # the victim fine-tunes the very model the owner optimized against
        assert victims == surrogates
        return
    seen = {}
    for name, seed in surrogates:
        seen.update({k: f"surrogate {name} (seed {seed}).{e}" for k, e in drawn_tensors(name, seed).items()})
    for name, seed in victims:
        shared = [f"{e} = {seen[k]}" for k, e in drawn_tensors(name, seed).items() if k in seen]
        assert not shared, f"{threat}-box victim {name} (seed {seed}) starts from its surrogate: {shared[:3]}"
