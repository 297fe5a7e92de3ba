"""Mllama-specific checks: the real MllamaProcessor's full output (tokens, cross-attention mask, tiles) and the
cross-attention plumbing that the shared family tests cannot see."""
import pytest
import torch
from PIL import Image
from transformers import MllamaProcessor

from mmguard.data.sample import pil_to_tensor
from mmguard.data.synthetic import generate
from mmguard.models import build_model


@pytest.fixture(scope="module")
def adapter():
    return build_model("tiny-mllama", seed=0)


@pytest.fixture(scope="module")
def samples():
    return generate(2, seed=1, types=("colour",))


@pytest.mark.parametrize("size,tiles", [((32, 32), 1), ((40, 56), 2), ((70, 30), 2)])
def test_collate_matches_real_processor(adapter, samples, size, tiles):
    s = samples[0]
    image = s.pil.resize((size[1], size[0]), Image.BICUBIC)
    proc = MllamaProcessor(adapter.image_processor, adapter.tokenizer, chat_template=adapter.tokenizer.chat_template)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_question}]},
                {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    text = adapter.tokenizer.apply_chat_template(messages, tokenize=False)
    real = proc(images=[image], text=[text], return_tensors="pt", add_special_tokens=False)
    enc = adapter.encode(s)
    ours = adapter.collate([enc], [pil_to_tensor(image)])
    assert torch.equal(ours["input_ids"], real["input_ids"])
    for key in ("cross_attention_mask", "aspect_ratio_ids", "aspect_ratio_mask"):
        assert torch.equal(ours[key], real[key]), key
    assert int(real["aspect_ratio_mask"].sum()) == tiles
    diff = (ours["pixel_values"] - real["pixel_values"]).abs()
    assert diff.mean() <= (1e-6 if size == (32, 32) else 2e-2)
    # X is the <|image|> token; rows before it are masked out of cross-attention, rows from it on see the tiles
    x = int(enc.spans["X"][0])
    assert int(enc.input_ids[x]) == adapter.image_token_id
    assert ours["cross_attention_mask"][0, :x].sum() == 0 and (ours["cross_attention_mask"][0, x:, 0, 0] == 1).all()


def test_token_level_mask_is_expanded_by_the_model_hook(adapter, samples):
    """The shared ``generate`` passes the (B, L) mask from ``extra_token_inputs``: same logits as the dense one."""
    batch = adapter.collate([adapter.encode(s) for s in samples], [s.pixels() for s in samples])
    kwargs = {k: v for k, v in batch.items() if k != "labels"}
    token_mask = adapter.extra_token_inputs(batch["input_ids"], batch["attention_mask"], None)
    with torch.no_grad():
        dense = adapter.model(**kwargs, use_cache=False).logits
        kwargs["cross_attention_mask"] = token_mask["cross_attention_mask"]
        sparse = adapter.model(**kwargs, use_cache=False).logits
    assert torch.equal(dense, sparse)


@pytest.mark.parametrize("name,self_layers", [("tiny-mllama", 2), ("tiny-mllama-wide", 3)])
def test_attention_modules_are_self_attention_only(name, self_layers):
    a = build_model(name, seed=0)
    cfg = a.model.config.text_config
    assert len(a.attention_modules) == self_layers == cfg.num_hidden_layers - len(cfg.cross_attention_layers)
    assert all(type(m).__name__ == "MllamaTextSelfAttention" for m in a.attention_modules)
    # the image id sits just past the LM head's vocabulary, as in the real checkpoint
    assert a.image_token_id == cfg.vocab_size < a.language_model.embed_tokens.num_embeddings
