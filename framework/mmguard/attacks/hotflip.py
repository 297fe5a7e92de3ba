"""HotFlip search over the text trigger (METHOD.md, "Text side").

A trigger is a string of whole words with a leading space, inserted into the question (never replacing a
question token). One round: first-order scores (e_v - e_cur)^T grad for every admissible token v at every
trigger position, top-K per position, then exact verification: decode each single-token flip to a string,
insert and re-tokenize it, compute the true loss, keep the best. Strings (not ids) are the currency between
steps because BPE merges can change token boundaries and because an ensemble shares gamma as a string.

Admissible tokens (``ADMISSIBLE_RULE``) are whole English words that say nothing about the task: a leading space,
at least three lower-case ASCII letters, and a word of pyspellchecker's English dictionary; never an answer, alias
or option word of the data set, a word of a chat template or a role, nor a special or added token (``exclude``,
gathered by ``excluded_words``).

Why a dictionary: a BPE vocabulary (the tiny byte-level ones as much as a real checkpoint's 32k-150k) holds word
pieces beside words (" st", " ou", " shap", " har"), and nothing in the tokenizer tells " shap" (a piece of
" shape") from " shape": both are single tokens with a leading space, and real words are as often prefixes of
longer tokens (" black" of " blackboard") as pieces are. A list of words is the same test for every tokenizer
family. pyspellchecker's English list (MIT, pure Python, no dependencies, maintained) is a spell checker's: it
accepts words, so it holds few pieces ("tion", "ment", "pre", "ould" are absent). Frequency lists such as
wordfreq's count the pieces that tokenizers left in their corpora as words: there "ing" and "pre" score above
"quartz" and "zephyr", so no threshold separates them. Three letters at least: two-letter entries are mostly
abbreviations and pieces (" st", " ou"), and so are the rare three-letter ones (of GPT-2's 594 lower-case
three-letter dictionary tokens, the 206 counted below 2000 include " col", " gen", " len", " aug", " ing"), which
are kept out. Lower case only: the capitalized and mixed-case tokens that a case-blind look-up admits are mostly
pieces of names (GPT-2's " DeL", " Byz") and acronyms (" SIG", " COP"), and a trigger of ordinary words reads as
text. Answer words are excluded because a trigger that names an answer (" black") teaches the answer instead of a
shortcut; template and role words because a trigger that reads " assistant" forges the chat structure of some
victim's template, whichever family it is.
"""
from __future__ import annotations

import contextlib
import functools
import re
import weakref
from typing import Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

WORD = re.compile(r"^ [a-z]{3,}$")
LETTERS_RUN = re.compile(r"[A-Za-z]+")
#: the roles chat templates give turns (the supported families', and the LLaVA/ShareGPT conversation formats')
ROLE_WORDS = frozenset({"user", "assistant", "system", "model", "human", "gpt", "tool", "observation", "ipython"})
#: three-letter dictionary entries below this count are mostly pieces and abbreviations ("col", "gen", "len",
#: "aug", "ing"), those above mostly words ("egg", "hut", "mid")
SHORT_WORD_MIN_COUNT = 2000
ADMISSIBLE_RULE = ("trigger tokens are whole English words: a leading space, then >= 3 lower-case ASCII letters "
                   "forming a word of pyspellchecker's English dictionary (three-letter ones only with a count "
                   f">= {SHORT_WORD_MIN_COUNT} there); no special or added token; no answer, alias or "
                   "option word of the data set, no word of any chat template and no role word "
                   f"({', '.join(sorted(ROLE_WORDS))}), whatever their case")
_VOCAB_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def admissible_rule() -> str:
    """``ADMISSIBLE_RULE`` with the word list's version: the line a protected set's manifest records."""
    import spellchecker

    return f"{ADMISSIBLE_RULE} (pyspellchecker {spellchecker.__version__})"


@functools.lru_cache(maxsize=None)
def english_words() -> FrozenSet[str]:
    """The words a trigger token may be: pyspellchecker's English dictionary (lower case), its three-letter
    entries only when common (``SHORT_WORD_MIN_COUNT``)."""
    from spellchecker import SpellChecker

    counts = SpellChecker(language="en", distance=1).word_frequency.dictionary
    return frozenset(w for w, n in counts.items() if len(w) > 3 or n >= SHORT_WORD_MIN_COUNT)


def words_of(text: str) -> List[str]:
    """The runs of letters of ``text``, lower case ("<|im_start|>user" -> im, start, user)."""
    return [w.lower() for w in LETTERS_RUN.findall(text or "")]


@functools.lru_cache(maxsize=None)
def family_template_words() -> FrozenSet[str]:
    """Every word of every registered tiny family's chat template pieces (a trigger travels to victims of any
    family, each of which wraps it in its own template)."""
    from mmguard.core.registry import MODELS
    from mmguard.models.zoo import build_model

    words, one_per_family = set(), {MODELS.meta(n)["family"]: n for n in MODELS.names("tiny-*")}
    with torch.random.fork_rng(devices=[]):  # building the models leaves the caller's random state alone
        for name in one_per_family.values():
            words |= template_words(build_model(name, seed=0).pieces)
    return frozenset(words)


def template_words(pieces) -> FrozenSet[str]:
    """The words of one adapter's ``TemplatePieces``."""
    return frozenset(w for field in ("prefix", "between", "before_answer", "after_answer", "answer_prefix")
                     for w in words_of(getattr(pieces, field)))


def excluded_words(samples: Iterable = (), adapters: Iterable = ()) -> FrozenSet[str]:
    """The lower-case words no trigger token may be: every answer, alias and multiple-choice option word of
    ``samples``, every word of the chat templates of ``adapters`` and of every registered family, and the role
    words. Pass the result as ``exclude`` to ``admissible_vocabulary``, ``init_trigger`` and ``hotflip_round``."""
    words = set(ROLE_WORDS) | family_template_words()
    for adapter in adapters:
        words |= template_words(adapter.pieces)
    for s in samples:
        for text in [s.answer, *s.aliases, *(s.choices or [])]:
            words.update(words_of(text))
    return frozenset(words)


def _anchor(tokenizer) -> Tuple[List[int], str]:
    ids = tokenizer("a", add_special_tokens=False).input_ids
    return ids, tokenizer.decode(ids)


def _decode_after_anchor(tokenizer, seqs: Sequence[Sequence[int]]) -> List[str]:
    # SentencePiece drops the leading space of a decoded sequence's first word; decoding after an anchor
    # word and cutting it off keeps that space for every tokenizer family.
    anchor, text = _anchor(tokenizer)
    out = []
    texts = tokenizer.batch_decode([anchor + list(map(int, q)) for q in seqs],
                                   clean_up_tokenization_spaces=False)
    for s in texts:
        out.append(s[len(text):] if s.startswith(text) else s)
    return out


def decode_trigger(tokenizer, ids: Sequence[int]) -> str:
    """Token ids of a trigger -> the string to insert (leading space kept)."""
    return _decode_after_anchor(tokenizer, [ids])[0] if len(ids) else ""


def token_strings(tokenizer) -> List[str]:
    """The string of each id < len(tokenizer) standing alone after a word (cached with the vocabulary)."""
    return _scan(tokenizer)["strings"]


def _scan(tokenizer) -> Dict:
    """The tokenizer's strings and its whole-word ids, scanned once (again if the tokenizer gained tokens)."""
    size = len(tokenizer)
    hit = _VOCAB_CACHE.get(tokenizer)
    if hit is not None and hit["size"] == size:
        return hit
    strings = _decode_after_anchor(tokenizer, [[i] for i in range(size)])
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    english = english_words()
    words = [i for i, s in enumerate(strings) if i not in special and WORD.match(s) and s[1:] in english]
    entry = {"size": size, "strings": strings, "words": words, "by_exclusion": {}}
    _VOCAB_CACHE[tokenizer] = entry
    return entry


def admissible_vocabulary(tokenizer, exclude: Iterable[str] = ()) -> torch.Tensor:
    """Ids (ascending) of the tokens ``ADMISSIBLE_RULE`` admits, none of whose word (lower case) is in
    ``exclude`` (``excluded_words``). Cached per tokenizer and set of exclusions."""
    scan = _scan(tokenizer)
    key = frozenset(w.lower() for w in exclude)
    ids = scan["by_exclusion"].get(key)
    if ids is None:
        strings = scan["strings"]
        ids = torch.tensor([i for i in scan["words"] if strings[i][1:].lower() not in key], dtype=torch.long)
        scan["by_exclusion"][key] = ids
    return ids


def init_trigger(tokenizer, n_tokens: int, rng=None, exclude: Iterable[str] = ()) -> str:
    """A random trigger of ``n_tokens`` distinct admissible words (``rng``: numpy Generator, seed or None)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ids = admissible_vocabulary(tokenizer, exclude)
    pick = rng.choice(len(ids), size=min(n_tokens, len(ids)), replace=False)
    return decode_trigger(tokenizer, ids[torch.as_tensor(pick)].tolist())


@contextlib.contextmanager
def embedding_grads(adapter) -> Iterator[Dict[str, torch.Tensor]]:
    """Within the block, ``store["embeds"]`` is the last (B, L, d) input-embedding output; after backward its
    ``.grad`` is d loss / d e at every position. Works with frozen weights: the output is then made a leaf."""
    store: Dict[str, torch.Tensor] = {}

    def hook(module, inputs, out):
        if out.dim() != 3:  # e.g. a lookup of one special token's embedding
            return None
        if out.requires_grad:
            out.retain_grad()
        else:
            out = out.detach().requires_grad_()
        store["embeds"] = out
        return out

    handle = adapter.model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def hotflip_candidates(grad: torch.Tensor, current_ids: torch.Tensor, embedding_matrix: torch.Tensor,
                       admissible_ids: torch.Tensor, top_k: int = 64) -> Tuple[torch.Tensor, torch.Tensor]:
    """First-order flips: score[j, v] = (e_v - e_cur_j)^T grad_j. We minimize l_prot, so the most negative
    scores come first. Returns (ids, scores), each (n, K), ascending by score per position; the current token
    itself (a no-op flip) is never proposed."""
    emb = embedding_matrix.detach().float()
    grad = grad.detach().float().to(emb.device)
    adm = torch.as_tensor(admissible_ids, dtype=torch.long, device=emb.device)
    cur = torch.as_tensor(current_ids, dtype=torch.long, device=emb.device)
    scores = grad @ emb[adm].T - (emb[cur] * grad).sum(-1, keepdim=True)  # (n, |A|)
    scores = scores.masked_fill(adm[None, :] == cur[:, None], float("inf"))
    k = min(top_k, adm.numel())
    vals, idx = torch.topk(scores, k, dim=1, largest=False, sorted=True)
    return adm[idx], vals


def verify(candidates: Sequence[torch.Tensor], evaluate_fn: Callable[[List[str]], torch.Tensor], tokenizer,
           current_ids: Sequence[Sequence[int]], current_loss: Optional[torch.Tensor] = None
           ) -> Tuple[List[str], torch.Tensor]:
    """Exact verification of single-token flips, for a batch of samples with one trigger each.

    ``candidates[i]`` is (n_i, K) from ``hotflip_candidates`` for sample i whose trigger tokens are
    ``current_ids[i]``. Flip (j, r) replaces token j by candidate r; its decoded string is handed to
    ``evaluate_fn(list of B trigger strings) -> (B,) losses``, which inserts, re-tokenizes and scores it (see
    ``encoding_evaluator``), so a flip is judged on its real tokens even when BPE re-splits it. All samples
    try their (j, r)-th flip in the same call. Returns each sample's best trigger string (the current one
    unless a flip strictly lowers the loss) and its loss.
    """
    current = [decode_trigger(tokenizer, ids) for ids in current_ids]
    best_loss = evaluate_fn(current) if current_loss is None else current_loss
    best_loss = best_loss.detach().float().cpu().clone()
    best = list(current)
    n_max = max((c.shape[0] for c in candidates), default=0)
    k_max = max((c.shape[1] for c in candidates if c.dim() == 2), default=0)
    for j in range(n_max):
        for r in range(k_max):
            trial = list(current)
            for i, cand in enumerate(candidates):
                if j < cand.shape[0] and r < cand.shape[1]:
                    ids = [int(t) for t in current_ids[i]]
                    ids[j] = int(cand[j, r])
                    trial[i] = decode_trigger(tokenizer, ids)
            losses = evaluate_fn(trial).detach().float().cpu()
            for i in torch.nonzero(losses < best_loss).flatten().tolist():
                best[i], best_loss[i] = trial[i], losses[i]
    return best, best_loss


ViewLoss = Callable[[object], torch.Tensor]       # a SurrogateView -> (B,) losses
MakeView = Callable[[List[Optional[str]]], object]  # trigger strings -> a SurrogateView with them inserted


def trigger_evaluator(make_view: MakeView, loss_fn: ViewLoss, max_tokens: Optional[int] = None
                      ) -> Callable[[List[str]], torch.Tensor]:
    """``evaluate_fn`` for ``verify`` on one surrogate: ``make_view`` inserts each trigger and re-tokenizes, and
    ``loss_fn`` scores the view per sample, (B,). A trigger whose real tokens exceed ``max_tokens`` (the eps_t
    budget) scores +inf. Runs in eval mode so that dropout does not decide between candidates. Sum several
    evaluators for an ensemble."""

    def evaluate(triggers: List[str]) -> torch.Tensor:
        view = make_view(triggers)
        model = view.adapter.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                losses = loss_fn(view).float().cpu()
        finally:
            model.train(was_training)
        if max_tokens is not None:
            over = torch.tensor([e.spans["G"].numel() > max_tokens for e in view.encoded])
            losses = losses.masked_fill(over, float("inf"))
        return losses

    return evaluate


def flip_candidates(view, loss_fn: ViewLoss, top_k: int = 64, exclude: Iterable[str] = ()
                    ) -> Tuple[List[List[int]], List[torch.Tensor]]:
    """First-order candidates for every trigger position of every sample of ``view``: the gradient of sum_i
    loss_i at the trigger embeddings, scored against the admissible vocabulary less ``exclude``. Returns (current
    trigger ids, candidate ids (n_i, K)) per sample."""
    adapter = view.adapter
    with embedding_grads(adapter) as store:
        loss = loss_fn(view).sum()
    grads = torch.autograd.grad(loss, store["embeds"])[0]  # leaves the model's .grad untouched
    emb = adapter.model.get_input_embeddings().weight
    adm = admissible_vocabulary(adapter.tokenizer, exclude)
    current_ids, candidates = [], []
    for b, e in enumerate(view.encoded):
        g = e.spans["G"]
        current_ids.append(e.input_ids[g].tolist())
        ids, _ = hotflip_candidates(grads[b, g.to(grads.device)], e.input_ids[g], emb, adm, top_k)
        candidates.append(ids.cpu())
    return current_ids, candidates


def hotflip_round(make_view: MakeView, loss_fn: ViewLoss, triggers: Sequence[Optional[str]], top_k: int = 64,
                  verify_k: Optional[int] = None, max_tokens: Optional[int] = None,
                  evaluate_fn: Optional[Callable[[List[str]], torch.Tensor]] = None, exclude: Iterable[str] = ()
                  ) -> Tuple[List[str], torch.Tensor]:
    """One HotFlip round: candidates (admissible, less ``exclude``) from ``make_view(triggers)``'s surrogate and
    gradient, the first ``verify_k`` of each verified exactly (by ``evaluate_fn``: default this surrogate alone;
    an ensemble passes its weighted sum). Returns the new trigger strings and their losses."""
    view = make_view(list(triggers))
    current_ids, candidates = flip_candidates(view, loss_fn, top_k, exclude)
    if verify_k is not None:
        candidates = [c[:, :verify_k] for c in candidates]
    evaluate = evaluate_fn or trigger_evaluator(make_view, loss_fn, max_tokens)
    return verify(candidates, evaluate, view.adapter.tokenizer, current_ids)
