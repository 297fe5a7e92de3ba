"""The differentiable image processors against the real (PIL-backed) Hugging Face ones, for every registered
family (timm-style: a family is tested the moment it registers).

Parity runs at real image sizes with two processor configurations per family: the tiny model's own, and the
family's image processor class with its library defaults (the real resolution, filter, crop and tiling
arithmetic). No model forward passes here, so it stays fast.
"""
import copy
import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_transforms import center_crop as library_center_crop

from mmguard.core.registry import MODELS
from mmguard.data.sample import pil_to_tensor
from mmguard.models import build_model
from mmguard.models.processing import center_crop, pil_resize

BASE = [n for n in MODELS.names("tiny-*") if not n.endswith("-wide")]
# (height, width): two real photo sizes, an odd portrait, the off-by-one crop case both ways, the tiny native size
SIZES = [(336, 448), (480, 640), (517, 333), (35, 32), (32, 35), (32, 32)]
_CACHE = {}


def adapter_for(name, config="tiny"):
    """The tiny adapter; with config="default" the same adapter around its image processor class built with the
    library's defaults (layout and preprocess read only the image processor)."""
    if name not in _CACHE:
        _CACHE[name] = build_model(name, seed=0)
    adapter = _CACHE[name]
    if config == "default":
        adapter = copy.copy(adapter)
        adapter.image_processor = type(adapter.image_processor)()
    return adapter


def random_image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def to_pil(pixels):
    return Image.fromarray(pixels.mul(255).round().byte().permute(1, 2, 0).numpy())


# ----------------------------------------------------------------- the building blocks
@pytest.mark.parametrize("resample", [int(r) for r in Image.Resampling])
@pytest.mark.parametrize("src,dst", [((32, 40), (22, 32)), ((22, 32), (32, 32)), ((61, 19), (13, 44)),
                                     ((50, 50), (9, 40)),  # the vertical-first pass order of recent Pillow
                                     ((480, 640), (336, 448)), ((35, 32), (224, 204)), ((7, 300), (1, 3))])
def test_pil_resize_is_pil(resample, src, dst):
    im = random_image(*src, seed=sum(src))
    ours = pil_resize(pil_to_tensor(im), *dst, resample)
    ref = pil_to_tensor(im.resize((dst[1], dst[0]), resample=resample))
    assert torch.equal(ours, ref)


def test_pil_resize_batched_and_differentiable():
    x = torch.stack([pil_to_tensor(random_image(40, 30, s)) for s in range(2)]).requires_grad_()
    y = pil_resize(x, 17, 23, 3)
    assert torch.equal(y[1], pil_resize(x[1], 17, 23, 3))
    y.sum().backward()
    # straight-through roundings: the gradient is the filter's, W_v^T 1 1^T W_h, positive everywhere inside
    assert torch.isfinite(x.grad).all() and (x.grad.sum(1) > 0).all()


@pytest.mark.parametrize("image,crop", [((35, 32), (32, 32)), ((32, 35), (32, 32)), ((33, 40), (24, 17)),
                                        ((20, 25), (24, 24)), ((21, 24), (24, 30))])  # the last two pad
def test_center_crop_is_the_library_one(image, crop):
    x = torch.rand(3, *image)
    ref = library_center_crop(x.numpy(), crop, data_format="channels_first", input_data_format="channels_first")
    assert torch.equal(center_crop(x, *crop), torch.from_numpy(ref))


# ----------------------------------------------------------------- every family against its real processor
@pytest.mark.parametrize("config", ["tiny", "default"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("name", BASE)
def test_process_matches_real(name, size, config):
    a = adapter_for(name, config)
    image = random_image(*size, seed=size[0] * size[1])
    x = pil_to_tensor(image)
    sign = torch.from_numpy(np.random.default_rng(1).integers(0, 2, x.shape)).float() * 2 - 1
    x_pert = (x + sign * 8 / 255).clamp(0, 1)  # a +-8/255 perturbation, still 8-bit
    ours, ours_pert = a.process([x]), a.process([x_pert])
    real, real_pert = a.real_process([image]), a.real_process([to_pil(x_pert)])
    for key, value in ours.items():
        assert key in real, f"{key} missing from the real processor's output"
        ref, ref_pert = torch.as_tensor(real[key]), torch.as_tensor(real_pert[key])
        assert value.shape == ref.shape, f"{key}: {tuple(value.shape)} vs {tuple(ref.shape)}"
        if not value.is_floating_point():
            assert torch.equal(value, ref) and torch.equal(ours_pert[key], ref_pert), key
            continue
        assert (value - ref.float()).abs().max() <= 1e-3, f"{key}: max |difference| {(value - ref).abs().max()}"
        change, real_change = ours_pert[key] - value, (ref_pert - ref).float()
        rel = (change - real_change).norm() / real_change.norm()
        assert rel <= 0.01, f"{key}: the perturbation's change is {rel:.2%} off the real processor's"


@pytest.mark.parametrize("size", [(336, 448), (35, 32), (32, 32)], ids=["336x448", "35x32", "32x32"])
@pytest.mark.parametrize("name", BASE)
def test_gradient_reaches_raw_pixels(name, size):
    a = adapter_for(name, "default" if size[0] > 100 else "tiny")
    x = pil_to_tensor(random_image(*size, seed=3)).requires_grad_()
    out = a.process([x])
    weights = torch.Generator().manual_seed(0)
    loss = sum((v * torch.randn(v.shape, generator=weights)).sum() for v in out.values() if v.is_floating_point())
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ----------------------------------------------------------------- native size: bit-identical to before
# sha256 (first 16 hex digits) of process() on the seeded 32x32 batch below, and of the raw-pixel gradient of a
# seeded random projection of it, recorded with the torch-interpolate processors (commit d211d6b) before the
# PIL-exact resize replaced them: at the native size nothing is resized, so not one bit may change.
NATIVE_OUTPUTS = {
    "tiny-gemma3": "5512a587bdcf8e01", "tiny-glm4v": "c35a0b35ab7d5bec", "tiny-idefics3": "a0e88a4951e66c8b",
    "tiny-internvl": "92b01aacc13c3e32", "tiny-llava": "bb49c8249fe95ece", "tiny-mllama": "4c98a0ad729e50c4",
    "tiny-paligemma": "12d22e4fe3bf9136", "tiny-qwen2_5_vl": "46ff912b1d303502", "tiny-qwen3_vl": "8df105428c768cd2",
}
NATIVE_GRADIENTS = {
    "tiny-gemma3": "21e40378a15e3ce0", "tiny-glm4v": "a42ea7a923eaccb6", "tiny-idefics3": "82acde41707eebce",
    "tiny-internvl": "f3b6c99ef37fca50", "tiny-llava": "04d417d2e5f5451b", "tiny-mllama": "e6c102a7ad0474db",
    "tiny-paligemma": "645feea4cc30b7a6", "tiny-qwen2_5_vl": "c5891e6b7aa41ce3", "tiny-qwen3_vl": "d497aa08b2d2d8ea",
}


def native_batch():
    g = torch.Generator().manual_seed(1234)
    return [torch.randint(0, 256, (3, 32, 32), generator=g).float() / 255.0 for _ in range(2)]


def digest(tensors):
    h = hashlib.sha256()
    for key in sorted(tensors):
        v = tensors[key].detach().contiguous()
        h.update(key.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", BASE)
def test_native_size_is_bit_identical(name):
    if name not in NATIVE_OUTPUTS:
        pytest.skip(f"{name} registered after the native digests were recorded")
    a = adapter_for(name)
    images = [x.requires_grad_() for x in native_batch()]
    out = a.process(images)
    assert digest(out) == NATIVE_OUTPUTS[name]
    g = torch.Generator().manual_seed(99)
    loss = sum((v * torch.randn(v.shape, generator=g)).sum() for k, v in sorted(out.items()) if v.is_floating_point())
    loss.backward()
    assert digest({str(i): x.grad for i, x in enumerate(images)}) == NATIVE_GRADIENTS[name]


@pytest.mark.parametrize("size", [(32, 32), (35, 32), (336, 448)], ids=["32x32", "35x32", "336x448"])
@pytest.mark.parametrize("name", BASE)
def test_a_stack_of_one_size_processes_as_each_image_alone(name, size):
    """``process`` may run images of one size as one stack (``batched_preprocess``): the same inputs, bit for
    bit, and the same pixel gradients as preprocessing each image on its own."""
    from mmguard.models.processing import quantize_ste

    a = adapter_for(name)

    def run(stacked):
        images = [pil_to_tensor(random_image(*size, seed=s)).requires_grad_() for s in range(3)]
        if stacked:
            out = a.process(images)
        else:
            out = a.batch_pixel_inputs([a.preprocess(quantize_ste(x), a.layout(*size)) for x in images])
        g = torch.Generator().manual_seed(7)
        sum((v * torch.randn(v.shape, generator=g)).sum() for k, v in sorted(out.items())
            if v.is_floating_point()).backward()
        return out, [x.grad for x in images]

    (out, grads), (ref, ref_grads) = run(True), run(False)
    assert sorted(out) == sorted(ref)
    assert all(torch.equal(out[k], ref[k]) for k in ref)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads))


def test_a_resize_first_made_in_inference_mode_still_takes_gradients():
    """An evaluation (inference mode) may be the first to ask for a resize's weights; PGD reuses them after."""
    from mmguard.models.processing import pil_resize

    with torch.inference_mode():
        pil_resize(torch.rand(1, 3, 37, 29), 13, 11, 2)
    x = (torch.rand(1, 3, 37, 29) * 255).round().div(255).requires_grad_(True)
    pil_resize(x, 13, 11, 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
