"""InternVL specifics: the real InternVLProcessor's tiles and tokens, and the pixel-shuffle token order."""
import pytest
import torch
from PIL import Image
from transformers.models.internvl.processing_internvl import InternVLProcessor

from mmguard.data.synthetic import generate
from mmguard.models.internvl import InternVLAdapter


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return InternVLAdapter.tiny("tiny-internvl")


@pytest.mark.parametrize("size", [(32, 32), (40, 56), (20, 90)])
def test_encode_matches_real_processor(adapter, size, monkeypatch):
    a = adapter
    # the processor checks its (absent) video processor class, which needs torchvision; we pass none
    monkeypatch.setattr(InternVLProcessor, "check_argument_for_proper_class", lambda *args: None)
    s = generate(1, seed=2, types=("colour",))[0]
    s = s.replace(image=s.pil.resize((size[1], size[0]), Image.BICUBIC))
    gh, gw = a.layout(*size)["grid"]
    proc = InternVLProcessor(a.image_processor, a.tokenizer, image_seq_length=gh * gw,
                             chat_template=a.tokenizer.chat_template)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_question}]},
                {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    text = a.tokenizer.apply_chat_template(messages, tokenize=False)
    real = proc(text=text, images=[s.pil], return_tensors="pt")
    enc = a.encode(s)
    assert real["input_ids"][0].tolist() == enc.input_ids.tolist()
    assert real["pixel_values"].shape == a.process([s.pixels()])["pixel_values"].shape


def test_pixel_shuffle_order_matches_patch_boxes(adapter):
    a = adapter
    layout = a.layout(32, 32)
    cfg = a.model.config.vision_config
    g = cfg.image_size[0] // cfg.patch_size[0]
    rr, cc = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    feats = torch.stack([rr, cc], -1).float()[None]  # (1, g, g, 2): each patch carries its (row, col)
    out = a.model.model.pixel_shuffle(feats, a.model.config.downsample_ratio).reshape(-1, 8)
    boxes = a.patch_boxes(layout)
    for k in range(out.shape[0]):
        rows, cols = out[k, 0::2], out[k, 1::2]
        y0, x0, y1, x1 = (boxes[k] * g).round().tolist()
        assert rows.min() == y0 and rows.max() == y1 - 1 and cols.min() == x0 and cols.max() == x1 - 1
