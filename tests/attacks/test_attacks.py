"""Every registered attack on every tiny family, a few steps each: the budget holds on the written PNGs,
the protection loss falls, the same seed repeats exactly, and triggers are inserted and admissible."""
import json
import re

import numpy as np
import pytest
import torch
from helpers import attack_spec, next_round, protect_to, stepping
from PIL import Image

from mmguard.attacks import hotflip
from mmguard.core.registry import ATTACKS, MODELS
from mmguard.data.synthetic import generate

FAMILIES = [n for n in MODELS.names("tiny-*") if not n.endswith("-wide")]
FAST = {"R": 2, "P": 2, "Q": 1, "top_k": 4, "verify_k": 2, "eps_t": 2, "batch_size": 4}


def run(attack, family, seed=0, n=4, **extra):
    samples = generate(n, seed=5, types=("colour",))
    return samples, protect_to(attack_spec(attack, [family], seed=seed, each={**FAST, **extra}), samples)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attack", ATTACKS.names())
def test_attack_on_family(attack, family, tmp_path):
    samples, ps = run(attack, family)
    cls = ATTACKS.get(attack)
    out = ps.path
    data = json.loads((out / "data.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(data) == len(samples) and manifest["attack"] == attack
    eps = round(ps.hyperparameters["eps_x"] * 255)
    for entry, clean in zip(data, samples):
        png = np.asarray(Image.open(out / entry["image"]).convert("RGB")).astype(int)
        diff = np.abs(png - np.asarray(clean.pil).astype(int)).max()
        assert diff <= eps, f"{entry['id']}: L-inf {diff}/255 > {eps}/255"
        if cls.image:
            assert diff > 0
        else:
            assert diff == 0
    questions = [e["conversations"][0]["value"] for e in data]
    if cls.text:
        adm = set(hotflip.token_strings(ps_tokenizer(family))[i] for i in
                  hotflip.admissible_vocabulary(ps_tokenizer(family)).tolist())
        for q, clean, row in zip(questions, samples, ps.per_sample):
            trig = row["trigger"]
            assert q.endswith(clean.question + trig) or (clean.question + trig) in q
            words = re.findall(r" [A-Za-z]+", trig)
            assert "".join(words) == trig and 1 <= len(words) <= FAST["eps_t"]
            assert all(w in adm for w in words), trig
            excluded = hotflip.excluded_words(samples)  # answers of the data, template and role words
            assert not any(w.strip().lower() in excluded for w in words), trig
        assert json.loads((out / "manifest.json").read_text())["trigger_rule"] == hotflip.admissible_rule()
    else:
        assert all(r["trigger"] is None for r in ps.per_sample)
    if cls.optimize:
        assert len(ps.history) >= 1


_TOKENIZERS = {}


def ps_tokenizer(family):
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = MODELS.get(family)(seed=0).tokenizer
    return _TOKENIZERS[family]


@pytest.mark.parametrize("attack", [a for a in ATTACKS.names() if ATTACKS.get(a).optimize])
def test_same_seed_same_protection(attack):
    _, a = run(attack, "tiny-llava", seed=3)
    _, b = run(attack, "tiny-llava", seed=3)
    for x, y in zip(a.samples, b.samples):
        assert np.array_equal(np.asarray(x.pil), np.asarray(y.pil))
        assert x.question == y.question


def module_for(samples, attack, tmp_path, **keys):
    return stepping(attack_spec(attack, each={**FAST, "Q": 0, **keys}), samples, tmp_path)


def l_prot(module, samples, images=None):
    """l_prot of the current protected inputs (or ``images``), with the current triggers."""
    with torch.no_grad():
        views = module.views(samples, [module.triggers.get(s.id) for s in samples])
        deltas = module.deltas(samples, module.round) if module.attack.image else None
        images = module.images(samples, module.round) if images is None else images
        return float(module.l_prot(views, images, deltas).mean())


@pytest.mark.parametrize("attack", [a for a in ATTACKS.names() if ATTACKS.get(a).optimize])
def test_protection_loss_falls(attack, tmp_path):
    """With the surrogate held fixed (Q=0: LoRA re-initialized to zero each round), l_prot must fall."""
    samples = generate(8, seed=5, types=("colour",))
    module = module_for(samples, attack, tmp_path, P=5)
    before = l_prot(module, samples)
    for _ in range(2):
        module.training_step([s.id for s in samples], 0)
        next_round(module)
    assert l_prot(module, samples) < before


def test_perturbations_are_stored_by_sample_id_on_disk_as_float16(tmp_path):
    """Perturbations live in round files keyed by sample id (2 bytes per sub-pixel), not by batch position; the
    file of the running round is never written, the next round's once per sample."""
    from mmguard.engine.state import StateDir

    samples = generate(6, seed=0, types=("colour",))
    state = StateDir(tmp_path)
    state.write_layout([s.id for s in samples], [(3, 32, 32)] * 6, "x")
    file = state.deltas(0).create()
    marker = torch.full((3, 32, 32), 0.01)
    file.write_many([(samples[4].id, marker)])
    assert torch.allclose(file.read(samples[4].id), marker, atol=1e-5)
    assert torch.equal(file.read(samples[0].id), torch.zeros(3, 32, 32))
    assert file.path.stat().st_size == 6 * 3 * 32 * 32 * 2


def test_release_is_8bit_and_within_budget():
    from mmguard.engine.store import quantize_release

    x = torch.randint(0, 256, (3, 8, 8)).float() / 255
    delta = (torch.rand(3, 8, 8) * 2 - 1) * 4.5 / 255
    out = quantize_release(x, delta, 4.5 / 255)
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)
    assert ((out - x).abs() * 255).max() <= 4 + 1e-4
    assert out.min() >= 0 and out.max() <= 1


def test_target_shift_pulls_towards_the_next_class(tmp_path):
    """target: shift optimizes each sample towards the next class's answer (and l_train is minimized even
    for a *_max attack)."""
    samples = generate(12, seed=5, types=("colour",))
    module = module_for(samples, "mmguard_bph_max", tmp_path, P=4, target="shift")
    classes = sorted({s.answer for s in samples})
    for s in samples:
        assert module.objective[s.id].answer == classes[(classes.index(s.answer) + 1) % len(classes)]
    before = l_prot(module, samples)
    module.training_step([s.id for s in samples], 0)
    next_round(module)
    assert l_prot(module, samples) < before


def test_expectation_over_transformation_through_differentiable_jpeg(tmp_path):
    """eot: the image loss is averaged over differentiable probe versions (kornia's JPEG among them); the
    perturbation then differs from the plain one, and the loss under JPEG falls."""
    samples = generate(6, seed=5, types=("colour",))
    eot = [{"name": "jpeg", "quality": 75}, {"name": "blur"}, {"name": "none"}]
    module = module_for(samples, "em_image", tmp_path, P=4, init="zero", eot=eot)
    assert len(module.eot_versions(module.images(samples, 0), torch.Generator())) == 3
    probes = list(module.eot)

    def under_jpeg():
        module.eot = []
        try:
            jpeg = [probes[0].differentiable(x[None])[0] for x in module.images(samples, module.round)]
            return l_prot(module, samples, jpeg)
        finally:
            module.eot = probes

    before = under_jpeg()
    module.training_step([s.id for s in samples], 0)
    next_round(module)
    assert under_jpeg() < before
    assert all(d.abs().max() > 0 for d in module.deltas(samples, module.round))


@pytest.mark.parametrize("attack", ["mmguard_bph", "mmguard_crs", "em_image"])
def test_weighted_ensemble_of_two_families(attack):
    """Delta shared in raw pixels, trigger shared as a string, each surrogate with its own processor,
    template and spans; weights normalized at load."""
    samples = generate(4, seed=5, types=("colour",))
    spec = attack_spec(attack, ["tiny-qwen2_5_vl", "tiny-paligemma"], each=FAST, weights=[3, 1])
    assert spec.surrogates[1].name == "tiny-paligemma"
    assert spec.weights == [0.75, 0.25]
    ps = protect_to(spec, samples)
    assert ps.surrogates == ["tiny-qwen2_5_vl", "tiny-paligemma"]
    assert ps.summary["linf_max_255"] <= 8 and len(ps.history) >= 1
    if ATTACKS.get(attack).text:
        assert all(r["trigger"] and r["trigger"].startswith(" ") for r in ps.per_sample)


@pytest.mark.parametrize("attack", [a for a in ATTACKS.names() if ATTACKS.get(a).image])
def test_psnr_floor_holds_on_released_images(attack):
    """psnr_min shrinks delta inside the L-inf ball: every released 8-bit image keeps the floor, while without
    it sign-PGD / uniform noise at 8/255 sits below it."""
    from mmguard.metrics.stealth import psnr

    floor = 36.0
    samples, ps = run(attack, "tiny-llava", psnr_min=floor, P=4)
    values = [float(psnr(c.pixels()[None], p.pixels()[None])) for c, p in zip(samples, ps.samples)]
    assert min(values) >= floor, values
    assert ps.summary["psnr"] >= floor
    _, free = run(attack, "tiny-llava", P=4)
    assert free.summary["psnr"] < floor  # the floor did something
