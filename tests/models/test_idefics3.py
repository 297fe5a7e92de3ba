"""Idefics3 specifics the shared family tests do not reach: the tiled layout (tiles + global image) checked
against the real Idefics3ImageProcessorPil and Idefics3Processor."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Idefics3Processor

from mmguard.data.sample import Sample, pil_to_tensor
from mmguard.models import build_model

SIZES = [(32, 32), (40, 56), (32, 64), (64, 32), (17, 90)]


def _image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=[16, 8], ids=["tile16", "tile8"])
def tiled(request):
    return build_model("tiny-idefics3", seed=0, tile=request.param)


@pytest.mark.parametrize("size", SIZES)
def test_tiled_processing_matches_real(tiled, size):
    im = _image(*size)
    ours = tiled.process([pil_to_tensor(im)])
    real = tiled.real_process([im])
    for key, value in ours.items():
        assert value.shape == real[key].shape
        assert (value.float() - real[key].float()).abs().max() <= 1e-5
    layout = tiled.layout(*size)
    frames = layout["rows"] * layout["cols"] + 1 if layout["rows"] else 1
    assert ours["pixel_values"].shape[1] == frames


@pytest.mark.parametrize("size", SIZES)
def test_tiled_tokens_match_real_processor(tiled, size):
    im = _image(*size)
    proc = Idefics3Processor(image_processor=tiled.image_processor, tokenizer=copy.deepcopy(tiled.tokenizer),
                             image_seq_len=tiled.tokens_per_frame)
    ids = proc(images=[im], text="User:<image>What colour is the shape?")["input_ids"][0]
    layout = tiled.layout(*size)
    image_ids, x_index = tiled.image_token_ids(layout)
    start = len(tiled._tok("User:"))
    assert ids[start:start + len(image_ids)] == image_ids
    assert len(x_index) == tiled.patch_boxes(layout).shape[0]
    assert tiled.collapse_image_tokens(tiled.tokenizer.decode(ids)) == "User:<image>What colour is the shape?"


def test_tiled_boxes_cover_the_image_twice(tiled):
    """Every tile's tokens and the global image's tokens each tile the unit square exactly once."""
    boxes = tiled.patch_boxes(tiled.layout(40, 56))
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum()
    assert torch.isclose(area, torch.tensor(2.0))


def test_mixed_frame_counts_batch(tiled):
    """Images with different tile counts pad with all-zero frames, which the model drops."""
    samples = [Sample("a", _image(32, 64), "What colour is the shape?", "red"),
               Sample("b", _image(40, 40, 1), "What colour is the shape?", "blue")]
    imgs = [s.pixels().requires_grad_() for s in samples]
    batch = tiled.collate([tiled.encode(s) for s in samples], imgs)
    logits = tiled.forward(batch)
    logits[batch["labels"] != -100].sum().backward()
    assert all(i.grad.abs().sum() > 0 for i in imgs)
    # each sample alone gives the same logits as in the padded batch
    for b, s in enumerate(samples):
        alone = tiled.forward(tiled.collate([tiled.encode(s)], [s.pixels()]))
        n = alone.shape[1]
        assert torch.allclose(alone[0], logits[b, :n], atol=1e-5)
