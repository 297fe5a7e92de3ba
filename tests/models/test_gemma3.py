"""Gemma-3 specifics: the real Gemma3Processor's token layout; sliding-window + bidirectional-image masks."""
import pytest
import torch
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

from mmguard.data.synthetic import generate
from mmguard.models.gemma3 import Gemma3Adapter


@pytest.fixture(scope="module")
def samples():
    return generate(2, seed=1, types=("colour", "count"))


def test_encode_matches_real_processor(samples):
    torch.manual_seed(0)
    a = Gemma3Adapter.tiny("tiny-gemma3")
    proc = Gemma3Processor(a.image_processor, a.tokenizer, chat_template=a.tokenizer.chat_template,
                           image_seq_length=a.model.config.mm_tokens_per_image)
    s = samples[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_question}]},
                {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    text = a.tokenizer.apply_chat_template(messages, tokenize=False)
    real = proc(text=text, images=[s.pil], return_tensors="pt")
    enc = a.encode(s)
    assert real["input_ids"][0].tolist() == enc.input_ids.tolist()
    ours = a.extra_token_inputs(enc.input_ids[None], torch.ones_like(enc.input_ids[None]), torch.tensor([0]))
    assert torch.equal(ours["token_type_ids"], real["token_type_ids"])


def test_sliding_window_and_image_block_rows_equal_eager(samples):
    torch.manual_seed(0)
    a = Gemma3Adapter.tiny("tiny-gemma3-sw", sliding_window=8)  # a window that bites on these sequences
    encs = [a.encode(s) for s in samples]
    batch = a.collate(encs, [s.pixels() for s in samples])
    rows = [torch.cat([e.spans["X"][:3], e.spans["Y"]]) for e in encs]
    layers = list(range(len(a.attention_modules)))
    with torch.no_grad(), a.attention_rows(layers, rows) as taps:
        a.forward(batch)
    eager = a.eager_attentions(batch)
    x = encs[0].spans["X"]
    for k in layers:
        for b in range(2):
            assert (taps[k].probs[b] - eager[k][b][:, rows[b]]).abs().max() <= 1e-5
        # the first soft token sees the last one (bidirectional within the image block) ...
        assert eager[k][0][:, x[0], x[-1]].min() > 0
    # ... and the sliding layer hides the image start from the answer, the global layer does not
    y = encs[0].spans["Y"][0]
    assert eager[0][0][:, y, x[0]].max() == 0 and eager[-1][0][:, y, x[0]].min() > 0


@pytest.mark.parametrize("window", [8, 512])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_broadcast_masks_equal_transformers_masks(window, padding_side):
    """The adapter's full-sequence masks (built by broadcasting) are transformers' own, bit for bit, with padding
    on either side and a window that bites or not; the model's logits are the same either way."""
    from transformers.models.gemma3 import modeling_gemma3 as G

    torch.manual_seed(0)
    a = Gemma3Adapter.tiny("tiny-gemma3-sw", sliding_window=window)
    a.model.eval()
    samples = generate(3, seed=2, types=("colour", "count", "shape"))
    samples[1] = samples[1].replace(question=samples[1].question + " Answer in one word, please.")
    batch = a.collate([a.encode(s) for s in samples], [s.pixels() for s in samples], padding_side=padding_side)
    assert (batch["attention_mask"] == 0).any()
    ours = a.model_inputs(batch)["attention_mask"]
    text = a.model.config.get_text_config()
    embeds = torch.zeros(*batch["input_ids"].shape, text.hidden_size)
    theirs = G.create_masks_for_vision_model(
        config=text, inputs_embeds=embeds, attention_mask=batch["attention_mask"], cache=None,
        position_ids=torch.arange(embeds.shape[1])[None],
        block_sequence_ids=G.get_block_sequence_ids_for_mask(batch["token_type_ids"]))
    for kind in ("full_attention", "sliding_attention"):
        assert torch.equal(ours[kind].expand_as(theirs[kind]), theirs[kind]), kind
    plain = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(a.forward(batch), a.model(**plain, use_cache=False).logits, atol=1e-5)
