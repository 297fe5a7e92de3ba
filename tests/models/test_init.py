"""Initial weights: a model's random init derives from its seed mixed with its name, so no two registered models
share an initial tensor; a row's threat model is decided from the weights its models start from
(``models/threat.py``), and every threat recipe's rows are labelled as their victims' starting tensors say."""
import hashlib
from pathlib import Path

import pytest
import torch

from mmguard.config.recipe import load_recipe
from mmguard.config.spec import ModelSpec
from mmguard.core.model_names import is_tiny
from mmguard.core.registry import MODELS
from mmguard.models import build_model
from mmguard.models.threat import initial_weights, threat_model
from mmguard.models.zoo import init_seed

ROOT = Path(__file__).resolve().parents[2]
TINY = MODELS.names("tiny-*")
# Every threat recipe (under recipes/) and the threat model of its rows: one for all, or one per victim recipe. The
# white-box recipe's adapter rows fine-tune the pre-trained twin, not the random-init model its releases are made
# with: gray-box. A new threat recipe (say recipes/pretrained/whitebox.yaml) is one line here.
THREATS = {
    "threat/whitebox.yaml": {"full": "white-box", "lora": "gray-box", "dora": "gray-box", "projector": "gray-box",
                             "projector_lora": "gray-box", "qlora": "gray-box"},
    "threat/graybox.yaml": "gray-box",
    "threat/blackbox.yaml": "black-box",
    # the pre-trained world: the aligned model itself, its seed-1 alignment (no trained tensor in common:
    # test_effnet_gemma3.py), the tiny families
    "pretrained/whitebox.yaml": "white-box",
    "pretrained/graybox.yaml": "gray-box",
    "pretrained/blackbox.yaml": "black-box",
}


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


def state_digest(model):
    """One digest of a model's whole starting state dict (every entry, in order)."""
    h = hashlib.sha256()
    for key, value in build_model(model.name, seed=model.seed, pretrained=model.pretrained).model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def cheap(model) -> bool:
    """Built in a moment: a tiny model at random init (a twin needs its pre-training; a checkpoint, its weights)."""
    return is_tiny(model.name) and not model.pretrained


def spec(name, seed=0, pretrained=False, **kw):
    return ModelSpec(name, pretrained=pretrained, seed=seed, **kw)


@pytest.mark.parametrize("a, b", [
    (spec("tiny-llava", 6), spec("tiny-llava", 6, dtype="float32", device="cpu")),  # where they live does not count
    (spec("tiny-llava", 6), spec("tiny-llava", 0)),
    (spec("tiny-llava", 0), spec("tiny-llava-wide", 0)),
    (spec("tiny-llava", 0), spec("tiny-gemma3", 0)),
], ids=["same", "other-seed", "other-size", "other-family"])
def test_initial_weights_agree_with_the_tensors(a, b):
    assert (initial_weights(a) == initial_weights(b)) == (state_digest(a) == state_digest(b))


def test_what_pretrained_weights_and_twins_start_from(tmp_path):
    aligned = [spec("effnet-gemma3-270m", s, pretrained=True) for s in (0, 3)]
    assert threat_model([aligned[0]], aligned[1]) == "white-box"  # its own weights: the seed draws nothing
    assert threat_model([spec("effnet-gemma3-270m", 0)], aligned[0]) == "gray-box"  # a projector at random init
    twin = spec("tiny-llava", 6, pretrained=True)
    assert threat_model([spec("tiny-llava", 6)], twin) == "gray-box"  # the twin is trained from that init
    assert threat_model([twin], spec("tiny-llava", 6, pretrained=True)) == "white-box"
    assert threat_model([twin], spec("tiny-llava", 7, pretrained=True)) == "gray-box"
    assert threat_model([spec("tiny-llava"), spec("tiny-qwen2_5_vl")], spec("tiny-gemma3")) == "black-box"
    (tmp_path / "config.json").write_text("{}")
    folder = {"name": str(tmp_path), "pretrained": True, "seed": 0}  # a checkpoint is one, however it is named
    assert threat_model([folder], {**folder, "name": str(tmp_path / ".." / tmp_path.name), "seed": 5}) == "white-box"
    assert threat_model([spec("tiny-llava")], folder) == "unknown"  # its family is not read here
    assert threat_model([], twin) == "unknown"


def threat_recipes():
    found = {str(p.relative_to(ROOT / "recipes")) for folder in ("threat", "pretrained")
             for p in (ROOT / "recipes" / folder).glob("*.yaml")
             if not p.name.startswith("_") and p.stem not in ("matrix", "learn")}  # _base: included; matrix: an
    # overlay; learn: no attack
    assert found <= set(THREATS), f"classify every threat recipe in THREATS: {sorted(found - set(THREATS))}"
    return sorted(THREATS)


@pytest.mark.parametrize("recipe", threat_recipes())
def test_threat_recipes_label_each_row_by_the_weights_its_victim_starts_from(recipe):
    spec_ = load_recipe(ROOT / "recipes" / recipe)
    expected = THREATS[recipe]
    assert spec_.victims and spec_.attacks
    built = {}

    def digests(m):
        """(shape, digest) of every drawn entry, built once per model."""
        if (m.name, m.seed) not in built:
            built[(m.name, m.seed)] = drawn_tensors(m.name, m.seed)
        return built[(m.name, m.seed)]

    for v in spec_.victims:
        want = expected if isinstance(expected, str) else expected[v.name]
        for a in spec_.attacks:
            label = threat_model(a.surrogates, v.model)
            assert label == want, f"{recipe}: {v.label} against {a.label}'s surrogates is {label}, not {want}"
            if not (cheap(v.model) and all(cheap(s) for s in a.surrogates)):
                continue  # a twin or a checkpoint: its spec decides (test_what_pretrained_weights_...)
            if label == "white-box":  # the victim starts from a surrogate's very tensors
                assert any(state_digest(s) == state_digest(v.model) for s in a.surrogates), v.label
            else:
                shared = [f"{e} = {s.name}.{digests(s)[k]}" for s in a.surrogates
                          for k, e in digests(v.model).items() if k in digests(s)]
                assert not shared, f"{want} victim {v.label} starts from its surrogate: {shared[:3]}"
