"""HotFlip search over the text trigger (METHOD.md, "Text side").

A trigger is a string of whole words with a leading space, inserted into the question (never replacing a
question token). One round: first-order scores (e_v - e_cur)^T grad for every admissible token v at every
trigger position, top-K per position, then exact verification: decode each single-token flip to a string,
insert and re-tokenize it, compute the true loss, keep the best. Strings (not ids) are the currency between
steps because BPE merges can change token boundaries and because an ensemble shares gamma as a string.
"""
from __future__ import annotations

import contextlib
import re
import weakref
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

WORD = re.compile(r"^ [A-Za-z]{2,}$")
_VOCAB_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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
    return _vocab(tokenizer)[1]


def _vocab(tokenizer) -> Tuple[torch.Tensor, List[str]]:
    size = len(tokenizer)
    hit = _VOCAB_CACHE.get(tokenizer)
    if hit is not None and hit[0] == size:  # a tokenizer that gained tokens is rescanned
        return hit[1], hit[2]
    strings = _decode_after_anchor(tokenizer, [[i] for i in range(size)])
    excluded = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    ids = torch.tensor([i for i, s in enumerate(strings) if i not in excluded and WORD.match(s)],
                       dtype=torch.long)
    _VOCAB_CACHE[tokenizer] = (size, ids, strings)
    return ids, strings


def admissible_vocabulary(tokenizer) -> torch.Tensor:
    """Ids (ascending) whose string is a leading space and a whole alphabetic word of >= 2 letters: no special
    or added tokens, control, digits or punctuation. Cached per tokenizer."""
    return _vocab(tokenizer)[0]


def init_trigger(tokenizer, n_tokens: int, rng=None) -> str:
    """A random trigger of ``n_tokens`` distinct admissible words (``rng``: numpy Generator, seed or None)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    ids = admissible_vocabulary(tokenizer)
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


def flip_candidates(view, loss_fn: ViewLoss, top_k: int = 64) -> Tuple[List[List[int]], List[torch.Tensor]]:
    """First-order candidates for every trigger position of every sample of ``view``: the gradient of sum_i
    loss_i at the trigger embeddings, scored against the admissible vocabulary. Returns (current trigger ids,
    candidate ids (n_i, K)) per sample."""
    adapter = view.adapter
    with embedding_grads(adapter) as store:
        loss = loss_fn(view).sum()
    grads = torch.autograd.grad(loss, store["embeds"])[0]  # leaves the model's .grad untouched
    emb = adapter.model.get_input_embeddings().weight
    adm = admissible_vocabulary(adapter.tokenizer)
    current_ids, candidates = [], []
    for b, e in enumerate(view.encoded):
        g = e.spans["G"]
        current_ids.append(e.input_ids[g].tolist())
        ids, _ = hotflip_candidates(grads[b, g.to(grads.device)], e.input_ids[g], emb, adm, top_k)
        candidates.append(ids.cpu())
    return current_ids, candidates


def hotflip_round(make_view: MakeView, loss_fn: ViewLoss, triggers: Sequence[Optional[str]], top_k: int = 64,
                  verify_k: Optional[int] = None, max_tokens: Optional[int] = None,
                  evaluate_fn: Optional[Callable[[List[str]], torch.Tensor]] = None) -> Tuple[List[str], torch.Tensor]:
    """One HotFlip round: candidates from ``make_view(triggers)``'s surrogate and gradient, the first
    ``verify_k`` of each verified exactly (by ``evaluate_fn``: default this surrogate alone; an ensemble passes
    its weighted sum). Returns the new trigger strings and their losses."""
    view = make_view(list(triggers))
    current_ids, candidates = flip_candidates(view, loss_fn, top_k)
    if verify_k is not None:
        candidates = [c[:, :verify_k] for c in candidates]
    evaluate = evaluate_fn or trigger_evaluator(make_view, loss_fn, max_tokens)
    return verify(candidates, evaluate, view.adapter.tokenizer, current_ids)
