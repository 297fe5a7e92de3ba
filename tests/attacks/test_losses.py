"""The protection losses on hand-made attention, and on the tiny LLaVA through the attention tap."""
import math

import pytest
import torch

from mmguard.attacks import losses as L
from mmguard.attacks.hotflip import embedding_grads
from mmguard.data.synthetic import generate
from mmguard.models import attention_tap, build_model


def test_mean_attention_and_uniform():
    probs = torch.tensor([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert torch.allclose(L.mean_attention(probs), torch.tensor([1.5, 1.5, 1.0]) / 4)
    assert torch.equal(L.uniform_on(torch.tensor([1, 3]), 4), torch.tensor([0.0, 0.5, 0.0, 0.5]))
    with pytest.raises(ValueError):
        L.mean_attention(torch.zeros(2, 0, 3))


def test_l_mass_zero_on_uniform_and_monotone():
    target, length = torch.tensor([2, 3, 5]), 8
    u, off = L.uniform_on(target, length), L.uniform_on(torch.tensor([0, 1, 7]), length)
    assert L.l_mass(u, target).abs() < 1e-6
    values = [float(L.l_mass((1 - m) * u + m * off, target)) for m in (0.0, 0.1, 0.3, 0.5, 0.8, 0.95)]
    assert all(b > a for a, b in zip(values, values[1:]))
    # KL(U_R || Abar) by its definition
    abar = torch.softmax(torch.randn(length), 0)
    ref = sum((1 / 3) * math.log((1 / 3) / float(abar[r])) for r in target)
    assert float(L.l_mass(abar, target)) == pytest.approx(ref, rel=1e-5)
    assert float(L.l_mass_layers([u, abar], target)) == pytest.approx(ref / 2, rel=1e-5)
    assert torch.isfinite(L.l_mass(torch.zeros(length), target))  # eps clamp


def test_perturbation_tokens_ties_and_ceil():
    assert L.perturbation_tokens(torch.tensor([1.0, 2.0, 2.0, 0.0]), 0.25).tolist() == [1]
    assert L.perturbation_tokens(torch.tensor([1.0, 2.0, 2.0, 0.0]), 0.5).tolist() == [1, 2]
    assert L.perturbation_tokens(torch.zeros(6), 0.5).tolist() == [0, 1, 2]  # all tied: lowest indices
    # ceil(2.5) = 3; the tie at 1.0 goes to the lower index
    assert L.perturbation_tokens(torch.tensor([0.0, 3.0, 1.0, 3.0, 1.0]), 0.5).tolist() == [1, 2, 3]
    assert len(L.perturbation_tokens(torch.rand(10), 0.3)) == 3
    assert len(L.perturbation_tokens(torch.rand(10), 0.31)) == 4


def test_bph_terms_and_empty_trigger():
    torch.manual_seed(0)
    abar_g = [torch.softmax(torch.randn(12), 0) for _ in range(2)]
    abar_y = [torch.softmax(torch.randn(12), 0) for _ in range(2)]
    d, g = torch.tensor([1, 2, 3]), torch.tensor([8, 9])
    full = L.bph(abar_g, abar_y, d, g, betas=(1.0, 2.0, 3.0))
    ref = L.l_mass_layers(abar_g, d) + 2 * L.l_mass_layers(abar_y, g) + 3 * L.l_mass_layers(abar_y, d)
    assert torch.allclose(full, ref)
    only_y = 3 * L.l_mass_layers(abar_y, d)
    assert torch.allclose(L.bph(None, abar_y, d, torch.tensor([], dtype=torch.long), (1.0, 2.0, 3.0)), only_y)
    no_g = torch.tensor([], dtype=torch.long)
    assert torch.allclose(L.bph(abar_g, abar_y, d, no_g, (1.0, 2.0, 3.0)), only_y)


def _spans(x, t, g, y):
    return {k: torch.tensor(v, dtype=torch.long) for k, v in zip("XTGY", (x, t, g, y))}


def test_align_keys_by_role():
    # clean: [p, x, x, s, t, t, a, y, e]; protected: the trigger (2 keys) after the question
    clean = _spans([1, 2], [4, 5], [], [7])
    prot = _spans([1, 2], [4, 5], [6, 7], [9])
    ic, ip = L.align_keys(clean, prot, 9, 11)
    assert ic.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert ip.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]
    # a BPE merge across the boundary swallowed the last question token into G: it stays unpaired
    merged = _spans([1, 2], [4], [5, 6], [8])
    ic, ip = L.align_keys(clean, merged, 9, 10)
    assert ic.tolist() == [0, 1, 2, 3, 4, 6, 7, 8] and ip.tolist() == [0, 1, 2, 3, 4, 7, 8, 9]


def test_crs_zero_when_equal_and_shift_otherwise():
    torch.manual_seed(0)
    clean = _spans([1, 2], [4, 5], [], [7])
    prot = _spans([1, 2], [4, 5], [6, 7], [9])
    ic, ip = L.align_keys(clean, prot, 9, 11)
    pc = [torch.softmax(torch.randn(9), 0) for _ in range(2)]
    same = [torch.zeros(11).index_put((ip,), p) for p in pc]  # same routing, none on the trigger
    assert L.crs(pc, same, ic, ip).abs() < 1e-6
    own = torch.arange(9)
    assert L.crs(pc, [p.clone() for p in pc], own, own).abs() < 1e-6
    # routing half the mass onto the trigger keys: a positive divergence, crs < 0, larger with more mass
    shifted = [0.5 * s + 0.5 * L.uniform_on(torch.tensor([6, 7]), 11) for s in same]
    more = [0.1 * s + 0.9 * L.uniform_on(torch.tensor([6, 7]), 11) for s in same]
    assert L.crs(pc, shifted, ic, ip) < -0.1
    assert L.crs(pc, more, ic, ip) < L.crs(pc, shifted, ic, ip)
    # KL(clean || prot) with the trigger merged into one bucket: by hand for one layer
    p = pc[0]
    ref = float((p * (p / (0.5 * p)).log()).sum())
    assert float(L.crs(pc[:1], shifted[:1], ic, ip)) == pytest.approx(-ref, rel=1e-5)
    # stop-gradient on the clean pass
    c = pc[0].clone().requires_grad_()
    q = shifted[0].clone().requires_grad_()
    L.crs([c], [q], ic, ip).backward()
    assert c.grad is None and q.grad.abs().sum() > 0


def test_l_train_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, -100], [-100, 1, -100, -100, 6]])
    per = []
    for b in range(2):
        s = 0.0
        for t in range(1, 5):
            if labels[b, t] != -100:
                s -= float(torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]])
        per.append(s)
    assert float(L.l_train(logits, labels)) == pytest.approx(sum(per) / 2, rel=1e-5)
    assert L.l_train(logits, labels, "none").tolist() == pytest.approx(per, rel=1e-5)
    assert float(L.l_train(logits, labels, "token_mean")) == pytest.approx(sum(per) / 4, rel=1e-5)
    with pytest.raises(ValueError):
        L.l_train(logits, labels, "mean")


def test_joint_and_max_variant():
    lt, lb = torch.tensor(2.0), torch.tensor(3.0)
    assert float(L.joint(lt, lb, 0.5, 2.0)) == 7.0
    assert float(L.joint(lt, lb, 0.5, 2.0, maximize=True)) == 5.0
    assert float(L.joint(lt, None)) == 2.0


@pytest.fixture(scope="module")
def llava():
    return build_model("tiny-llava", seed=0)


def test_tiny_llava_tap_losses_and_gradients(llava, monkeypatch):
    a = llava
    samples = generate(2, seed=3, types=("colour", "colour_choice"))
    triggers = [" zephyr meadow", " amber"]
    prot = [a.encode(s, trigger=t) for s, t in zip(samples, triggers)]
    clean = [a.encode(s) for s in samples]
    pixels = [s.pixels() for s in samples]
    delta = [torch.zeros_like(p).uniform_(-8 / 255, 8 / 255).requires_grad_() for p in pixels]
    layers = [0]  # |K| = 1: the first layer only
    rows = [L.span_positions(e.spans, "G", "Y") for e in prot]

    calls = []
    real = attention_tap.row_probs

    def spy(module, *args):
        calls.append((module, args[-1].tolist()))
        return real(module, *args)

    monkeypatch.setattr(attention_tap, "row_probs", spy)
    batch = a.collate(prot, [(p + d).clamp(0, 1) for p, d in zip(pixels, delta)])
    with embedding_grads(a) as store, a.attention_rows(layers, rows) as taps:
        logits = a.forward(batch)
    # exactly the layers of K were tapped (one batched computation each), and only the source rows G and Y
    assert sorted(taps) == layers
    assert [c[0] for c in calls] == [a.attention_modules[0]]
    assert [row[: len(r)] for row, r in zip(calls[0][1], rows)] == [r.tolist() for r in rows]
    heads = a.model.config.text_config.num_attention_heads
    for b, e in enumerate(prot):
        assert taps[0].probs[b].shape == (heads, len(rows[b]), batch["input_ids"].shape[1])
    ref = a.eager_attentions(batch)[0]
    for b in range(2):
        assert torch.allclose(taps[0].probs[b], ref[b][:, rows[b]], atol=1e-5)

    # BPH + l_train on the protected pass
    lt = L.l_train(logits, batch["labels"])
    binds = []
    for b, e in enumerate(prot):
        ng = e.spans["G"].numel()
        abar_g = L.source_abars(taps, layers, b, slice(0, ng))
        abar_y = L.source_abars(taps, layers, b, slice(ng, None))
        scores = a.token_patch_means(delta[b].detach().abs(), e.layout)
        d_pos = e.spans["X"][L.perturbation_tokens(scores, 0.5)]
        assert d_pos.numel() == math.ceil(0.5 * e.spans["X"].numel())
        binds.append(L.bph(abar_g, abar_y, d_pos, e.spans["G"]))
    bph_loss = torch.stack(binds).mean()

    # CRS against the clean pass (its own tap; no gradient needed there)
    with torch.no_grad(), a.attention_rows(layers, [e.spans["Y"] for e in clean]) as ctaps:
        a.forward(a.collate(clean, pixels))
    crs_terms = []
    for b in range(2):
        ic, ip = L.align_keys(clean[b].spans, prot[b].spans, len(clean[b]), len(prot[b]))
        assert ic.numel() == len(clean[b]) and ip.numel() == len(prot[b]) - prot[b].spans["G"].numel()
        abar_yp = L.source_abars(taps, layers, b, slice(prot[b].spans["G"].numel(), None))
        crs_terms.append(L.crs(L.source_abars(ctaps, layers, b, slice(None)), abar_yp, ic, ip))
    crs_loss = torch.stack(crs_terms).mean()
    assert crs_loss < 0

    # the batched forms the attacks use equal these per-sample ones
    d_pos = [e.spans["X"][L.perturbation_tokens(a.token_patch_means(d.detach().abs(), e.layout), 0.5)]
             for e, d in zip(prot, delta)]
    keys = batch["input_ids"].shape[1]
    n_g = torch.tensor([e.spans["G"].numel() for e in prot])
    r = torch.arange(taps[0].batched.shape[2])[None]
    g_rows, y_rows = r < n_g[:, None], (r >= n_g[:, None]) & taps[0].row_mask
    batched = L.bph_batched([L.masked_abar(taps[0].batched, g_rows)], [L.masked_abar(taps[0].batched, y_rows)],
                            L.key_mask(d_pos, keys), L.key_mask([e.spans["G"] for e in prot], keys))
    assert torch.allclose(batched, torch.stack(binds), atol=1e-5)
    scores = a.token_patch_means(torch.stack([d.detach().abs() for d in delta]), prot[0].layout)
    assert torch.equal(L.perturbation_tokens_batched(scores, 0.5)[1],
                       L.perturbation_tokens(a.token_patch_means(delta[1].detach().abs(), prot[1].layout), 0.5))
    pairs = [L.align_keys(clean[b].spans, prot[b].spans, len(clean[b]), len(prot[b])) for b in range(2)]
    crs_b = L.crs_batched([L.masked_abar(ctaps[0].batched, ctaps[0].row_mask)],
                          [L.masked_abar(taps[0].batched, y_rows)], *L.aligned_index(pairs))
    assert torch.allclose(crs_b, torch.stack(crs_terms), atol=1e-5)

    L.joint(lt, bph_loss + crs_loss).backward()
    for d in delta:
        assert d.grad is not None and d.grad.abs().sum() > 0
    g = store["embeds"].grad
    assert g is not None
    for b, e in enumerate(prot):
        assert g[b, e.spans["G"]].abs().sum() > 0


def test_tiny_llava_crs_zero_for_identical_passes(llava):
    a = llava
    samples = generate(2, seed=4, types=("colour",))
    enc = [a.encode(s) for s in samples]
    batch = a.collate(enc, [s.pixels() for s in samples])
    abars = []
    for _ in range(2):
        with torch.no_grad(), a.attention_rows([0], [e.spans["Y"] for e in enc]) as taps:
            a.forward(batch)
        abars.append([L.source_abars(taps, [0], b, slice(None)) for b in range(2)])
    for b, e in enumerate(enc):
        ic, ip = L.align_keys(e.spans, e.spans, len(e), len(e))
        assert L.crs(abars[0][b], abars[1][b], ic, ip).abs() < 1e-6
