"""Stealth metrics with known values: PSNR formula, SSIM of identical images, edit distance, BLEU, perplexity."""
import math

import pytest
import torch

from mmguard.metrics import bleu, edit_distance, lpips, lpips_unavailable_reason, perplexity, psnr, ssim


def images(b=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g)


def test_psnr_identical_is_inf():
    x = images()
    out = psnr(x, x.clone())
    assert out.shape == (2,) and torch.isinf(out).all() and (out > 0).all()


def test_psnr_matches_formula_for_known_noise():
    x = torch.full((1, 3, 16, 16), 0.5)
    assert psnr(x, x + 0.01).item() == pytest.approx(40.0, abs=1e-3)  # MSE 1e-4 -> 10 log10(1e4)
    clean = images(3, seed=1) * 0.8 + 0.1
    noise = (torch.rand_like(clean) * 2 - 1) * (8 / 255)
    out = psnr(clean, clean + noise)
    mse = (noise.double() ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(out.double(), 10 * torch.log10(1 / mse), atol=1e-4)
    assert psnr(clean[0], (clean + noise)[0]).shape == (1,)  # a single (3, H, W) image


def test_ssim_identical_is_one_and_drops_with_noise():
    x = images()
    assert torch.allclose(ssim(x, x.clone()), torch.ones(2), atol=1e-6)
    small, big = (x + 0.02 * torch.randn_like(x)).clamp(0, 1), (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s_small, s_big = ssim(x, small), ssim(x, big)
    assert s_small.shape == (2,) and (s_big < s_small).all() and (s_small < 1).all()
    tiny = images(1, size=8)
    assert ssim(tiny, tiny).item() == pytest.approx(1.0, abs=1e-6)  # window shrinks below 11 px


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(images(1, 16), images(1, 32))


def test_lpips_never_downloads():
    x = images(1)
    values, reason = lpips(x, x)
    if values is None:
        assert isinstance(reason, str) and reason == lpips_unavailable_reason("alex")
    else:  # weights happen to be on disk
        assert reason is None and values.shape == (1,) and values.abs().max() < 1e-5
    assert lpips(x, x, net="nope") == (None, lpips_unavailable_reason("nope"))
    assert "unknown LPIPS network" in lpips_unavailable_reason("nope")


@pytest.mark.parametrize("a, b, level, expected", [
    ("the red circle", "the red circle", "word", 0),
    ("the red circle", "the blue circle", "word", 1),
    ("what colour is the shape", "what colour is shape", "word", 1),
    ("a b c", "c b a", "word", 2),
    ("", "one two", "word", 2),
    ("kitten", "sitting", "char", 3),
    (["x", "y"], ["y"], "word", 1),
])
def test_edit_distance(a, b, level, expected):
    assert edit_distance(a, b, level=level) == expected


def test_bleu():
    assert bleu("the cat is on the mat", "the cat is on the mat") == pytest.approx(1.0)
    assert bleu(["the cat is on the mat"], [["a dog runs", "the cat is on the mat"]]) == pytest.approx(1.0)
    assert bleu("dog", "the cat is on the mat") == 0.0
    # one substituted word out of six: precisions 5/6, 3/5, 2/4, 1/3, brevity penalty 1
    expected = math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    assert bleu("the cat is on a mat", "the cat is on the mat") == pytest.approx(expected, rel=1e-5)


class _Uniform(torch.nn.Module):
    """A causal LM whose next-token distribution is uniform: every text has perplexity = vocabulary size."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab, self.w = vocab, torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": torch.zeros(*input_ids.shape, self.vocab) + self.w})()


def _tokenizer():
    from mmguard.models.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer([], vocab_size=300, pad="<pad>", eos="</s>")


def test_perplexity_uniform_model_equals_vocab_size():
    tok = _tokenizer()
    v = len(tok)
    out = perplexity(["what colour is the shape", "?", "how many shapes are there?"], _Uniform(v), tok)
    assert out.shape == (3,) and len(tok("?")["input_ids"]) == 1
    assert math.isnan(out[1])  # a single token predicts nothing
    assert out[0].item() == pytest.approx(v, rel=1e-4) and out[2].item() == pytest.approx(v, rel=1e-4)


def test_perplexity_matches_model_loss_with_padding():
    transformers = pytest.importorskip("transformers")
    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    texts = ["what colour is the shape", "how many shapes are there in the top left corner?"]
    batched = perplexity(texts, model, tok, batch_size=2)  # the short text is padded
    for text, value in zip(texts, batched):
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        assert value.item() == pytest.approx(math.exp(loss.item()), rel=1e-4)
