"""Every registered tiny family, through the same checks (timm-style parametrization over the registry)."""
import pytest
import torch
import torch.nn.functional as F

from mmguard.data.synthetic import generate
from mmguard.models import build_model
from mmguard.core.registry import MODELS
from helpers import pretrained_installed

TINY = MODELS.names("tiny-*")
# the registered pre-trained models go through the same checks where their weight packages are installed (CI has
# them: the README's test command installs the extra)
# one model per pre-trained family (its other alignments differ in trained weights only, checked in its own tests)
PRETRAINED = [n for n in MODELS.names() if not MODELS.meta(n).get("tiny") and not MODELS.meta(n).get("alignment_seed")
              and pretrained_installed()]
BASE = [n for n in TINY if not n.endswith("-wide")] + PRETRAINED
_CACHE = {}


def adapter_for(name):
    if name not in _CACHE:
        _CACHE[name] = build_model(name, seed=0)
    return _CACHE[name]


@pytest.fixture(scope="module")
def samples():
    return generate(4, seed=1, types=("colour", "count"))


def test_nine_families_registered():
    families = {MODELS.meta(n)["family"] for n in TINY}
    assert {"qwen3_vl", "qwen2_5_vl", "llava", "mllama", "internvl", "gemma3", "glm4v", "idefics3",
            "paligemma"} <= families


@pytest.mark.parametrize("name", TINY)
def test_builds_tiny(name):
    n = adapter_for(name).num_parameters()
    assert 5e4 <= n <= 3e6, f"{name} has {n} parameters"


@pytest.mark.parametrize("name", BASE)
def test_pixel_gradient_nonzero(name, samples):
    a = adapter_for(name)
    imgs = [s.pixels().requires_grad_() for s in samples]
    batch = a.collate([a.encode(s) for s in samples], imgs)
    logits = a.forward(batch)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    loss.backward()
    for img in imgs:
        assert img.grad is not None and img.grad.abs().sum() > 0


@pytest.mark.parametrize("name", BASE)
def test_answer_logits_are_the_full_logits_at_the_answer(name, samples):
    """The LM head applied to the answer positions alone gives the full forward's logits there, and the
    training loss and its pixel gradients from them equal those of the full logits."""
    from mmguard.attacks.losses import l_train
    from mmguard.models.base import AnswerLogits

    a = adapter_for(name)
    a.model.eval()
    imgs = [s.pixels().requires_grad_() for s in samples]
    batch = a.collate([a.encode(s) for s in samples], imgs)
    full = a.forward(batch)
    answers = a.answer_logits(batch)
    reference = AnswerLogits.select(full, batch["labels"])
    assert answers.logits.shape == reference.logits.shape and answers.logits.shape[0] >= len(samples)
    # float32 rounding grows with the logits' scale (a real 262k-vocabulary head reaches |logit| ~ 70; the head on
    # fewer rows blocks its matmul differently)
    scale = max(1.0, reference.logits.abs().max().item())
    assert torch.allclose(answers.logits, reference.logits, atol=1e-5 * scale)
    assert answers.targets.tolist() == reference.targets.tolist()
    assert sorted(set(answers.sample.tolist())) == list(range(len(samples)))
    for reduction in ("token_mean", "sample_sum", "none", "sample_mean"):
        assert torch.allclose(l_train(answers, reduction=reduction), l_train(full, batch["labels"], reduction),
                              atol=1e-5)
    g_fast = torch.autograd.grad(l_train(answers, reduction="token_mean"), imgs, retain_graph=True)
    g_full = torch.autograd.grad(l_train(full, batch["labels"], "token_mean"), imgs)
    assert all(torch.allclose(x, y, atol=1e-6 + 1e-4 * y.abs().max().item()) for x, y in zip(g_fast, g_full))


@pytest.mark.parametrize("name", BASE)
def test_spans_decode_to_their_text(name, samples):
    a = adapter_for(name)
    s = samples[0]
    enc = a.encode(s, trigger=" zephyr meadow")
    dec = lambda k: a.tokenizer.decode(enc.input_ids[enc.spans[k]])  # noqa: E731
    assert dec("T").strip() == s.prompt_question.strip()
    assert dec("G") == " zephyr meadow"
    assert dec("Y").strip() == s.answer
    assert len(enc.spans["X"]) == a.patch_boxes(enc.layout).shape[0]
    assert (enc.labels != -100).sum() >= len(enc.spans["Y"])
    assert torch.equal(enc.labels[enc.spans["Y"]], enc.input_ids[enc.spans["Y"]])
    # the question tokens carry no labels: only the answer (and end of turn) is learned
    assert (enc.labels[: enc.answer_start] == -100).all()


@pytest.mark.parametrize("name", BASE)
def test_template_is_the_family_chat_template(name, samples):
    a = adapter_for(name)
    s = samples[0]
    enc = a.encode(s)
    text = a.collapse_image_tokens(a.tokenizer.decode(enc.input_ids))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt_question}]},
                {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    rendered = a.tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.strip() == rendered.strip()


@pytest.mark.parametrize("name", BASE)
def test_attention_rows_equal_eager(name, samples):
    a = adapter_for(name)
    encs = [a.encode(s, trigger=" amber") for s in samples[:2]]
    batch = a.collate(encs, [s.pixels() for s in samples[:2]])
    rows = [torch.cat([e.spans["G"], e.spans["Y"]]) for e in encs]
    layers = list(range(len(a.attention_modules)))
    with torch.no_grad(), a.attention_rows(layers, rows) as taps:
        a.forward(batch)
    eager = a.eager_attentions(batch)
    for k in layers:
        for b in range(2):
            ref = eager[k][b][:, rows[b]]
            got = taps[k].probs[b]
            assert got.shape == ref.shape
            assert (got - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("name", BASE)
def test_no_answer_leakage(name, samples):
    """PITFALLS 1: changing only the answer tokens must not move the logits that predict them."""
    a = adapter_for(name)
    s = samples[0]
    other = s.replace(answer="purple" if s.answer != "purple" else "orange", aliases=[])
    e1, e2 = a.encode(s), a.encode(other)
    if len(e1) != len(e2):
        pytest.skip("answers tokenize to different lengths")
    b1 = a.collate([e1], [s.pixels()])
    b2 = a.collate([e2], [s.pixels()])
    with torch.no_grad():
        l1, l2 = a.forward(b1), a.forward(b2)
    first = e1.answer_start - 1  # the position that predicts the first answer token
    assert torch.equal(l1[0, : first + 1], l2[0, : first + 1])


@pytest.mark.parametrize("name", BASE)
def test_patch_of_token_and_generate(name, samples):
    a = adapter_for(name)
    enc = a.encode(samples[0])
    boxes = a.patch_boxes(enc.layout)
    assert boxes.shape == (len(enc.spans["X"]), 4)
    assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    delta = torch.zeros(3, 32, 32)
    delta[:, :16, :16] = 1.0  # the top-left quarter
    means = a.token_patch_means(delta, enc.layout)
    inside = (boxes[:, 2] <= 0.5 + 1e-6) & (boxes[:, 3] <= 0.5 + 1e-6)
    assert torch.allclose(means[inside], torch.ones_like(means[inside]))
    out = a.generate(samples[:2], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
