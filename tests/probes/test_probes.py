"""Probes: the contract for every registered probe, then each probe's real effect on real numbers."""
import numpy as np
import pytest
import torch
from PIL import Image

from mmguard.data.sample import Sample, pil_to_tensor, tensor_to_pil
from mmguard.data.synthetic import generate
from mmguard.engine.build import build_probe
from mmguard.probes.base import ImageProbe, sample_rng, torch_generator
from mmguard.core.registry import PROBES
from helpers import applied

# Probes that need parameters to be built; every other probe is built with its defaults.
PARAMS = {"combo": {"probes": [{"name": "jpeg", "quality": 30}, "case", {"name": "mix", "fraction": 0.5}]}}
STOCHASTIC = ("rcp", "ueraser", "rcp_punctuation", "mix", "combo")


def build(name, **params):
    return build_probe({"name": name, **PARAMS.get(name, {}), **params})


def noisy(samples, amplitude=8 / 255, seed=0):
    """A stand-in for a protected set: the clean samples plus a fixed L-inf noise and a trigger."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in samples:
        x = s.pixels()
        delta = (torch.rand(x.shape, generator=g) * 2 - 1) * amplitude
        out.append(s.replace(image=tensor_to_pil(x + delta), question=s.question + "  Zz, ok!"))
    return out


@pytest.fixture(scope="module")
def clean():
    return generate(8, seed=0, types=("colour", "count", "position", "colour_choice"), size=32)


@pytest.fixture(scope="module")
def protected(clean):
    return noisy(clean)


def pixels(samples):
    return torch.stack([s.pixels() for s in samples])


def test_every_family_is_registered():
    expected = {"jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser",
                "punctuation", "case", "whitespace", "combo", "rcp_punctuation", "jpeg_case",
                "blur_whitespace", "mix", "question_strip", "onion", "canonical_question", "early_stop", "isolate"}
    assert expected <= set(PROBES.names())


@pytest.mark.parametrize("name", PROBES.names())
def test_contract(name, clean, protected):
    probe = build(name)
    before = pixels(protected)
    questions = [s.question for s in protected]
    plan = probe.plan(list(protected), list(clean), 3)
    out = plan.epoch(0)
    held = {s.id for s in plan.val or []}  # early_stop validates on a held-out split instead of training on it
    assert bool(held) == (name == "early_stop") and len(held) < len(protected)
    trained = [p for p in protected if p.id not in held]
    assert [s.id for s in out] == [s.id for s in trained]
    for o, p in zip(out, trained):
        # ueraser augments in the training step instead; early_stop and isolate change the fit, not the samples
        assert o is not p or probe.in_training_step or probe.fit_level
        assert o.answer == p.answer and o.aliases == p.aliases and o.choices == p.choices
        assert isinstance(o.image, Image.Image) and o.image.mode == "RGB" and o.image.size == p.pil.size
        x = o.pixels()
        assert torch.equal(x * 255, (x * 255).round())  # 8-bit levels
    # the input set is left untouched
    assert torch.equal(pixels(protected), before) and [s.question for s in protected] == questions


@pytest.mark.parametrize("name", PROBES.names())
def test_deterministic_and_order_independent(name, clean, protected):
    probe = build(name)
    a = applied(probe, protected, clean=clean, seed=7)
    b = applied(build(name), protected, clean=clean, seed=7)
    for x, y in zip(a, b):
        assert torch.equal(x.pixels(), y.pixels()) and x.question == y.question
    if not probe.stochastic:  # a deterministic probe's output for a sample depends on nothing else
        c = applied(probe, protected[::-1], clean=clean, seed=7)[::-1]
        assert all(torch.equal(x.pixels(), z.pixels()) and x.question == z.question for x, z in zip(a, c))
        if not probe.set_level:
            alone = applied(probe, protected[2:3], seed=7)[0]
            assert torch.equal(alone.pixels(), a[2].pixels())
            direct = probe(protected[2], sample_rng(7, protected[2].id))
            assert torch.equal(direct.pixels(), a[2].pixels())
    if name in STOCHASTIC and not probe.in_training_step:
        d = applied(probe, protected, clean=clean, seed=8)
        assert any(not torch.equal(x.pixels(), y.pixels()) for x, y in zip(a, d))


def test_parameters_are_declared_with_their_ranges():
    from mmguard.core.errors import UserError
    from mmguard.core.params import bind

    with pytest.raises(UserError, match="allowed: quality"):
        bind(PROBES.get("jpeg"), {"qualty": 10}, "probes.0")
    with pytest.raises(UserError, match="kernel': 4 is not odd"):
        bind(PROBES.get("blur"), {"kernel": 4}, "probes.0")
    with pytest.raises(UserError, match="probes.0.kernel': not a parameter.*allowed: quality"):
        bind(PROBES.get("jpeg_case"), {"kernel": 3}, "probes.0")


# -- image probes: real effects --------------------------------------------------------------------------
def mean_change(probe, samples):
    return (pixels(applied(probe, samples)) - pixels(samples)).abs().mean().item()


def hf_energy(x):
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def test_jpeg_quality_orders_the_damage(protected):
    q10, q95 = mean_change(PROBES.build("jpeg", quality=10), protected), mean_change(
        PROBES.build("jpeg", quality=95), protected)
    assert q10 > q95 > 0
    assert mean_change(PROBES.build("iss"), protected) == pytest.approx(q10)  # ISS default: JPEG-10


def test_blur_lowers_high_frequency_energy(protected):
    for name, ratio in (("blur", 0.5), ("resize", 0.5), ("median", 0.8)):
        out = pixels(applied(PROBES.build(name), protected))
        assert hf_energy(out) < ratio * hf_energy(pixels(protected)), name
    weak = pixels(applied(PROBES.build("blur", sigma=0.5), protected))
    strong = pixels(applied(PROBES.build("blur", kernel=5, sigma=2.0), protected))
    assert hf_energy(strong) < hf_energy(weak)


def test_grayscale_channels_equal(protected):
    for probe in (PROBES.build("grayscale"), PROBES.build("iss", mode="grayscale")):
        x = pixels(applied(probe, protected))
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
        assert x.std() > 0.05


def test_bitdepth_levels(protected):
    x = pixels(applied(PROBES.build("bitdepth", bits=3), protected))
    assert len(torch.unique(x)) <= 8
    assert len(torch.unique(pixels(applied(PROBES.build("bitdepth", bits=1), protected)))) <= 2


def test_median_removes_impulse():
    arr = np.full((16, 16, 3), 120, dtype=np.uint8)
    arr[7, 9] = 255
    s = Sample("impulse", Image.fromarray(arr), "q", "a")
    out = np.asarray(applied(PROBES.build("median"), [s])[0].pil)
    assert (out == 120).all()
    blurred = np.asarray(applied(PROBES.build("blur"), [s])[0].pil)
    assert blurred.max() > 120  # a Gaussian only spreads it


@pytest.mark.parametrize("pad", ["zeros", "reflect"])
def test_rcp_crops_and_pads_back(protected, pad):
    probe = PROBES.build("rcp", fraction=0.75, pad=pad)
    src = protected[0]
    out = probe(src, np.random.default_rng(0)).pixels()
    assert out.shape == src.pixels().shape
    core = out[:, 4:28, 4:28]  # 24x24 crop, 4 pixels of padding each side
    x = src.pixels()
    assert any(torch.equal(core, x[:, i:i + 24, j:j + 24]) for i in range(9) for j in range(9))
    border = torch.cat([out[:, :4].flatten(), out[:, -4:].flatten(), out[:, :, :4].flatten()])
    assert (border == 0).all() if pad == "zeros" else border.min() > 0.3
    assert applied(PROBES.build("rcp", fraction=1.0), [src])[0].pixels().equal(x)


def test_ueraser_augment_is_seeded_and_keeps_global_rng(protected):
    probe = PROBES.build("ueraser", copies=4)
    x = pixels(protected[:4])
    state = torch.random.get_rng_state()
    a = probe.augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, probe.augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, probe.augment(x, torch.Generator().manual_seed(2)))
    copies = probe.augment_copies(x, torch.Generator().manual_seed(1))
    assert copies.shape == (4, *x.shape) and not torch.equal(copies[0], copies[1])


# -- text probes ------------------------------------------------------------------------------------------
def test_text_probes():
    question = "  What, exactly, is\tthe SHAPE's\n\ncolour?!  "
    s = Sample("t", Image.new("RGB", (8, 8)), question, "red", choices=["x"])
    rng = np.random.default_rng(0)
    assert PROBES.build("punctuation")(s, rng).question == "  What exactly is\tthe SHAPEs\n\ncolour  "
    assert PROBES.build("case")(s, rng).question == "  what, exactly, is\tthe shape's\n\ncolour?!  "
    assert PROBES.build("whitespace")(s, rng).question == "What, exactly, is the SHAPE's colour?!"
    assert PROBES.build("whitespace").transform_text("a\u200b  b\u00a0 c ") == "a b c"
    assert PROBES.build("punctuation").transform_text("¿Qué… «color»?") == "Qué color"
    out = PROBES.build("case")(s, rng)
    assert out.answer == "red" and out.choices == ["x"] and out.image is s.image


# -- set level and combinations ----------------------------------------------------------------------------
def test_mix_keeps_exact_fraction(clean, protected):
    def n_protected(out):
        return sum(o.question.endswith("ok!") for o in out)

    out = applied(PROBES.build("mix", fraction=0.25), protected, clean=clean, seed=0)
    assert n_protected(out) == 2
    kept = {o.id for o in out if o.question.endswith("ok!")}
    for o, c in zip(out, clean):
        if o.id not in kept:
            assert torch.equal(o.pixels(), c.pixels()) and o.question == c.question
    assert n_protected(applied(PROBES.build("mix", fraction=0.0), protected, clean=clean)) == 0
    assert n_protected(applied(PROBES.build("mix", fraction=1.0), protected)) == 8
    shuffled = applied(PROBES.build("mix", fraction=0.25), protected[::-1], clean=clean[3:] + clean[:3], seed=0)
    assert {o.id for o in shuffled if o.question.endswith("ok!")} == kept
    seeds = {frozenset(o.id for o in applied(PROBES.build("mix", fraction=0.5), protected, clean=clean, seed=k)
                       if o.question.endswith("ok!")) for k in range(5)}
    assert len(seeds) > 1
    with pytest.raises(ValueError, match="clean"):
        applied(PROBES.build("mix"), protected)


def test_combo_applies_in_order(clean, protected):
    combo = build_probe({"name": "combo", "probes": [{"name": "grayscale"}, {"name": "bitdepth", "bits": 2}, "case"]})
    out = applied(combo, protected)
    step = applied(PROBES.build("bitdepth", bits=2), applied(PROBES.build("grayscale"), protected))
    assert torch.equal(pixels(out), pixels(step))
    assert out[0].question == protected[0].question.lower()
    jc = applied(PROBES.build("jpeg_case", quality=10), protected)
    assert torch.equal(pixels(jc), pixels(applied(PROBES.build("jpeg", quality=10), protected)))
    assert jc[0].question == protected[0].question.lower()
    rp = applied(PROBES.build("rcp_punctuation"), protected[:1])[0]
    assert "," not in rp.question and "!" not in rp.question
    assert applied(PROBES.build("blur_whitespace"), protected[:1])[0].question.endswith("Zz, ok!")
    # a set-level stage runs at its place: mix everything back to clean, then JPEG all of it
    mix_then_jpeg = build_probe({"name": "combo", "probes": [{"name": "mix", "fraction": 0.0}, "jpeg"]})
    mixed = applied(mix_then_jpeg, protected, clean=clean)
    assert torch.equal(pixels(mixed), pixels(applied(PROBES.build("jpeg"), clean)))
    assert combo.transform_text("A, B") == "a, b"


# -- differentiable versions (for expectation over transformation) ---------------------------------------
IMAGE_PROBES = ["jpeg", "blur", "rcp", "resize", "grayscale", "bitdepth", "median", "iss", "ueraser",
                "jpeg_case", "rcp_punctuation", "blur_whitespace"]
# With the same rng the differentiable op reproduces the data op (a combo's stages draw their own streams).
EXACT = ["blur", "grayscale", "resize", "median", "bitdepth", "rcp", "blur_whitespace", "iss_grayscale"]


@pytest.mark.parametrize("name", IMAGE_PROBES)
def test_differentiable_gives_gradients(name, protected):
    probe = PROBES.build(name)
    x = pixels(protected[:2]).requires_grad_(True)
    y = probe.differentiable(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", EXACT)
def test_differentiable_matches_the_op(name, protected):
    probe = PROBES.build("iss", mode="grayscale") if name == "iss_grayscale" else PROBES.build(name)
    for s in protected[:3]:
        real = probe(s, np.random.default_rng(4)).pixels()
        soft = probe.differentiable(s.pixels()[None], torch_generator(np.random.default_rng(4)))[0]
        assert (pil_to_tensor(tensor_to_pil(soft)) - real).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("quality", [10, 75])
def test_differentiable_jpeg_approximates_real_jpeg(protected, quality):
    probe = PROBES.build("jpeg", quality=quality)
    x = pixels(protected)
    real = pixels(applied(probe, protected))
    soft = probe.differentiable(x)
    assert (soft - real).abs().mean() < 0.5 * (x - real).abs().mean()
    assert (soft - real).abs().mean() < 0.02


def test_mix_has_no_differentiable_version():
    assert not isinstance(PROBES.build("mix"), ImageProbe)
    assert PROBES.get("mix").changes_image({}) and not PROBES.get("mix").has_differentiable({})
    assert not PROBES.get("case").changes_image({}) and PROBES.get("jpeg").has_differentiable({})
    assert not PROBES.get("combo").has_differentiable({"probes": ["jpeg", "mix"]})
    assert torch.equal(PROBES.build("case").differentiable(torch.ones(1, 3, 2, 2)), torch.ones(1, 3, 2, 2))


def test_ueraser_copies_are_independent_and_reproducible():
    """augment_copies draws each copy of each image independently (one kornia call on the repeated batch), and the
    same generator seed gives the same copies."""
    probe = PROBES.build("ueraser", copies=3)
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    copies = probe.augment_copies(x, torch.Generator().manual_seed(7))
    assert copies.shape == (3, 4, 3, 24, 24)
    for a in range(3):
        for b in range(a + 1, 3):
            assert (copies[a] - copies[b]).abs().flatten(1).mean(1).min() > 1e-3
    assert torch.equal(copies, probe.augment_copies(x, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("name", [n for n in PROBES.names() if isinstance(PROBES.get(n), type)
                                  and issubclass(PROBES.get(n), ImageProbe) and not PROBES.get(n).stochastic])
def test_a_plan_applies_a_deterministic_image_probe_in_stacks_as_one_by_one(name, protected):
    """Fine-tuning applies a deterministic image probe once, in stacks of one image size (``apply_batch``): the
    same 8-bit images as applying it to each sample on its own, over two sizes and more than one stack."""
    big = generate(3, seed=1, types=("colour",), size=40)
    samples = list(protected) + big
    probe = build(name)
    one_by_one = [probe(s, sample_rng(0, s.id)) for s in samples]
    planned = probe.plan(samples, samples, seed=0).samples
    stacked = probe.apply_batch(samples, chunk=3)
    for a, b, c in zip(one_by_one, planned, stacked):
        assert np.array_equal(np.asarray(a.pil), np.asarray(b.pil)) and np.array_equal(np.asarray(a.pil),
                                                                                         np.asarray(c.pil))
        assert (a.id, a.question) == (b.id, b.question) == (c.id, c.question)
