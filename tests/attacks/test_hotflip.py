"""HotFlip over the text trigger: the admissible vocabulary, candidate ranking, exact verification."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mmguard.attacks import hotflip as H
from mmguard.attacks.losses import l_train
from mmguard.attacks.view import SurrogateView
from mmguard.core.registry import DATASETS, MODELS
from mmguard.data.synthetic import QUESTION_TYPES, answer_vocabulary, generate
from mmguard.models import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def llava():
    return build_model("tiny-llava", seed=0)


@pytest.fixture(scope="module")
def samples():
    return generate(2, seed=5, types=("colour", "colour_choice"))


def test_admissible_vocabulary_rule(llava):
    tok = llava.tokenizer
    ids = H.admissible_vocabulary(tok)
    assert ids is H.admissible_vocabulary(tok)  # cached
    strings = H.token_strings(tok)
    assert len(ids) > 100
    special = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
    for i in ids.tolist():
        s = strings[i]
        assert s.startswith(" ") and re.fullmatch(r" [a-z]{3,}", s), repr(s)
        assert i not in special and i < len(tok)
    assert tok.convert_tokens_to_ids("Ġzephyr") in ids.tolist()
    rejected = {strings[i] for i in range(len(tok)) if i not in set(ids.tolist())}
    assert {"<image>", "<pad>", "</s>", "<s>", "?", ",", "."} <= rejected
    assert not any(re.fullmatch(r" [A-Za-z]{2,}", s) for i, s in enumerate(strings) if i in special)
    trig = H.init_trigger(tok, 5, np.random.default_rng(0))
    assert re.fullmatch(r"( [a-z]{3,}){5}", trig) and trig == H.init_trigger(tok, 5, 0)


def digit_samples():
    root = ROOT / "tests" / "fixtures" / "digits"
    splits = DATASETS.build("llava_json", train=root / "train" / "data.json", test=root / "test" / "data.json")
    return splits["train"] + splits["test"]


# word pieces the tiny byte-level BPE learned (the first two were picked by a real run before this rule; " col"
# of " colour" is a rare dictionary word, kept out by the three-letter floor)
PIECES = (" st", " ou", " th", " wh", " qu", " col", " shap", " har", " bot")


@pytest.mark.parametrize("family", [n for n in MODELS.names("tiny-*") if not n.endswith("-wide")])
def test_admissible_tokens_are_whole_words_that_say_nothing_of_the_task(family):
    adapter = build_model(family, seed=0)
    tok, strings = adapter.tokenizer, H.token_strings(adapter.tokenizer)
    digits = digit_samples()
    data = generate(400, seed=0, types=QUESTION_TYPES) + digits
    exclude = H.excluded_words(data, [adapter])
    ids = H.admissible_vocabulary(tok, exclude)
    assert ids is H.admissible_vocabulary(tok, set(exclude))  # cached per (tokenizer, exclusions)
    words = {strings[i][1:] for i in ids.tolist()}
    vocab = {t.replace("Ġ", " ") for t in tok.get_vocab()}
    assert set(PIECES) <= vocab  # the pieces are single tokens: the rule, not the vocabulary, keeps them out
    assert not {p[1:] for p in PIECES} & words
    assert all(re.fullmatch("[a-z]{3,}", w) and w in H.english_words() for w in words)
    assert "ing" not in H.english_words() and {"zephyr", "egg", "hut"} <= H.english_words()
    answers = set(answer_vocabulary()) | {w for s in digits for a in s.answers for w in H.words_of(a)}
    assert {"six", "nine", "red", "bottom"} <= answers
    assert not answers & {w.lower() for w in words}
    every_template = {w for name in MODELS.names("tiny-*") for w in H.template_words(build_model(name).pieces)}
    assert {"assistant", "user", "model", "system", "turn", "helpful"} <= every_template | H.ROLE_WORDS
    assert not (every_template | H.ROLE_WORDS) & {w.lower() for w in words}
    # still plenty for HotFlip's top-K (64 by default): 250 of the 1,000-odd tokens of each tiny tokenizer
    assert len(ids) >= 250, len(ids)
    assert len(H.admissible_vocabulary(tok)) > len(ids)  # the exclusions took something out


def test_init_trigger_and_candidates_keep_out_the_exclusions(llava, samples):
    tok, strings = llava.tokenizer, H.token_strings(llava.tokenizer)
    every = [strings[i][1:] for i in H.admissible_vocabulary(tok).tolist()]
    keep = {"zephyr", "meadow", "amber"}
    exclude = [w.upper() for w in every if w not in keep]  # case-insensitive
    for seed in range(5):
        assert set(H.init_trigger(tok, 3, seed, exclude).split()) == keep
    view = make_view(llava, samples)([" zephyr meadow", " amber"])
    _, candidates = H.flip_candidates(view, lambda v: l_train(v.forward()[0], v.labels, reduction="none"),
                                      top_k=8, exclude=exclude)
    assert {strings[i][1:] for c in candidates for i in c.flatten().tolist()} <= keep


def test_the_rule_is_one_line_for_the_manifest():
    rule = H.admissible_rule()
    assert "\n" not in rule and "pyspellchecker" in rule and "assistant" in rule


def test_candidates_rank_a_linear_loss():
    torch.manual_seed(0)
    V, d, n = 40, 6, 3
    emb = torch.randn(V, d)
    w = torch.randn(n, d)  # loss(e_1..e_n) = sum_j w_j . e_j, so grad_j = w_j and first order is exact
    cur = torch.tensor([3, 10, 3])
    adm = torch.arange(2, 30)
    ids, scores = H.hotflip_candidates(w, cur, emb, adm, top_k=5)
    assert ids.shape == (n, 5) and bool((scores[:, 1:] >= scores[:, :-1]).all())
    for j in range(n):
        true = {int(v): float((emb[v] - emb[cur[j]]) @ w[j]) for v in adm if v != cur[j]}
        best = sorted(true, key=true.get)[:5]
        assert ids[j].tolist() == best
        assert scores[j].tolist() == pytest.approx([true[v] for v in best], abs=1e-5)
        assert int(cur[j]) not in ids[j].tolist()


def test_verify_picks_lowest_true_loss(llava):
    tok = llava.tokenizer
    adm = H.admissible_vocabulary(tok).tolist()
    current = [[adm[0], adm[1]], [adm[2]]]
    cands = [torch.tensor([[adm[5], adm[6]], [adm[7], adm[8]]]), torch.tensor([[adm[9], adm[10]]])]
    table = {H.decode_trigger(tok, [adm[0], adm[8]]): -3.0, H.decode_trigger(tok, [adm[5], adm[1]]): -1.0}
    seen = []

    def evaluate(triggers):
        seen.append(list(triggers))
        return torch.tensor([table.get(t, 0.0) for t in triggers])

    best, losses = H.verify(cands, evaluate, tok, current)
    assert best == [H.decode_trigger(tok, [adm[0], adm[8]]), H.decode_trigger(tok, [adm[2]])]  # no gain: kept
    assert losses.tolist() == [-3.0, 0.0]
    assert len(seen) == 1 + 2 * 2  # the current triggers, then one call per (position, rank)


def _boundary_case(tok):
    """A trigger word BPE splits in pieces, and a flip of one piece that re-tokenizes differently."""
    adm = H.admissible_vocabulary(tok).tolist()
    for word in (" xylophone", " quokka", " zebras", " redness"):
        ids = tok(word, add_special_tokens=False).input_ids
        for j in range(len(ids)):
            for c in adm:
                new = list(ids)
                new[j] = c
                real = tok(H.decode_trigger(tok, new), add_special_tokens=False).input_ids
                if real != new and len(real) <= len(new):
                    return word, j, c, new, real
    raise AssertionError("no BPE boundary case in the tiny tokenizer")


def test_verify_scores_real_tokens_after_bpe_merge(llava, samples):
    a, tok = llava, llava.tokenizer
    word, j, c_merge, assumed, real = _boundary_case(tok)
    enc = a.encode(samples[0], trigger=word)
    current = enc.input_ids[enc.spans["G"]].tolist()
    assert H.decode_trigger(tok, current) == word
    c_plain = next(v for v in H.admissible_vocabulary(tok).tolist() if v not in assumed + real)
    # scored on the assumed ids the merge candidate would be worst; on its real tokens it is best
    table = torch.zeros(len(tok))
    table[c_merge] = 100.0
    table[[t for t in real if t not in assumed]] = -100.0

    def loss_fn(view):
        return torch.stack([table[e.input_ids[e.spans["G"]]].sum() for e in view.encoded])

    evaluate = H.trigger_evaluator(make_view(a, samples[:1]), loss_fn)
    best, losses = H.verify([torch.tensor([[c_merge if i == j else c_plain] for i in range(len(current))])],
                            evaluate, tok, [current])
    out = a.encode(samples[0], trigger=best[0])
    assert out.input_ids[out.spans["G"]].tolist() == real != assumed
    assert float(losses[0]) == pytest.approx(float(table[real].sum()))
    assert tok.decode(out.input_ids[out.spans["T"]]) == samples[0].prompt_question


def make_view(adapter, samples):
    """Trigger strings -> the view of ``samples`` with them inserted, on the clean images."""
    def make(triggers):
        return SurrogateView(adapter, samples, triggers, layers=[]).with_images([s.pixels() for s in samples])
    return make


def test_budget_rejects_longer_triggers(llava, samples):
    evaluate = H.trigger_evaluator(make_view(llava, samples), lambda view: torch.zeros(len(view.encoded)),
                                   max_tokens=2)
    assert evaluate([" zephyr meadow", " zephyr meadow amber"]).tolist() == [0.0, float("inf")]


def test_one_round_lowers_the_loss_on_tiny_llava(llava, samples):
    a = llava

    def loss_fn(view):  # the error-minimizing objective: answer NLL per sample
        return l_train(view.forward()[0], view.labels, reduction="none")

    triggers = [H.init_trigger(a.tokenizer, 2, np.random.default_rng(i)) for i in range(len(samples))]
    before = H.trigger_evaluator(make_view(a, samples), loss_fn)(triggers)
    new, losses = H.hotflip_round(make_view(a, samples), loss_fn, triggers, top_k=8, max_tokens=2)
    assert all(p.grad is None for p in a.model.parameters())  # the search leaves the model's grads alone
    assert bool((losses <= before).all()) and bool((losses < before - 1e-4).any())
    after = H.trigger_evaluator(make_view(a, samples), loss_fn)(new)
    assert torch.allclose(after, losses, atol=1e-5)
    for s, t in zip(samples, new):
        e = a.encode(s, trigger=t)
        # inserted, nothing replaced
        assert a.tokenizer.decode(e.input_ids[e.spans["T"]]) == s.prompt_question
        assert a.tokenizer.decode(e.input_ids[e.spans["G"]]) == t and e.spans["G"].numel() <= 2
