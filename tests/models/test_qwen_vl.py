"""Qwen2.5-VL / Qwen3-VL specifics: the whole real processor (chat template, image-pad expansion,
mm_token_type_ids, flattened patches) against our encode + collate, and smart_resize layouts at sizes that
really resize (up for min_pixels, down for max_pixels, rounding to patch*merge)."""
import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor, Qwen3VLProcessor

from mmguard.data.sample import pil_to_tensor
from mmguard.data.synthetic import generate
from mmguard.models import build_model

CASES = [("tiny-qwen2_5_vl", Qwen2_5_VLProcessor), ("tiny-qwen3_vl", Qwen3VLProcessor)]
_CACHE = {}


def adapter_for(name):
    if name not in _CACHE:
        _CACHE[name] = build_model(name, seed=0)
    return _CACHE[name]


def real_processor(adapter, cls):
    class ImageOnly(cls):  # the video processor needs torchvision (absent here); images never touch it
        def check_argument_for_proper_class(self, name, arg):
            return None if name == "video_processor" else super().check_argument_for_proper_class(name, arg)

    return ImageOnly(image_processor=adapter.image_processor, tokenizer=adapter.tokenizer,
                     video_processor=None, chat_template=adapter.tokenizer.chat_template)


@pytest.mark.parametrize("name,cls", CASES)
@pytest.mark.parametrize("size", [(32, 32), (45, 70)])
def test_whole_real_processor_matches(name, cls, size):
    a = adapter_for(name)
    s = generate(2, seed=3)[0]
    image = s.pil.resize((size[1], size[0]), Image.BICUBIC)
    s = s.replace(image=image)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_question}]},
                {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    text = a.tokenizer.apply_chat_template(messages, tokenize=False)
    real = real_processor(a, cls)(text=[text], images=[image], return_tensors="pt")
    enc = a.encode(s)
    batch = a.collate([enc], [pil_to_tensor(image)])
    assert real["input_ids"][0].tolist() == enc.input_ids.tolist()
    assert torch.equal(real["mm_token_type_ids"], batch["mm_token_type_ids"])
    assert torch.equal(real["image_grid_thw"], batch["image_grid_thw"])
    diff = (real["pixel_values"] - batch["pixel_values"]).abs()
    assert (diff.max() if size == (32, 32) else diff.mean()) <= (1e-3 if size == (32, 32) else 2e-2)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
@pytest.mark.parametrize("size", [(12, 20), (33, 47), (150, 300), (400, 40)])
def test_layout_matches_real_grid(name, size):
    a = adapter_for(name)
    image = Image.new("RGB", (size[1], size[0]), (120, 60, 200))
    real = a.real_process([image])
    ours = a.process([pil_to_tensor(image)])
    assert torch.equal(ours["image_grid_thw"], real["image_grid_thw"])
    assert ours["pixel_values"].shape == real["pixel_values"].shape
    assert (ours["pixel_values"] - real["pixel_values"]).abs().mean() <= 2e-2
    lay = a.layout(*size)
    ids, x = a.image_token_ids(lay)
    assert len(x) == int(real["image_grid_thw"].prod()) // a.image_processor.merge_size ** 2
    assert a.patch_boxes(lay).shape == (len(x), 4)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_mrope_positions_are_3d(name):
    """PITFALLS 2: the image tokens must get (t, h, w) grid positions, not a running 1-D index."""
    a = adapter_for(name)
    s = generate(1, seed=0)[0]
    batch = a.collate([a.encode(s)], [s.pixels()])
    pos, _ = a.model.model.get_rope_index(batch["input_ids"], batch["mm_token_type_ids"],
                                          batch["image_grid_thw"], attention_mask=batch["attention_mask"])
    img = batch["mm_token_type_ids"][0].bool()
    assert (pos[0, 0, img] == pos[0, 0, img][0]).all()  # one temporal position
    assert len(set(pos[1, 0, img].tolist())) > 1 and len(set(pos[2, 0, img].tolist())) > 1
