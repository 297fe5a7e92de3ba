"""ONION (Qi et al. 2021, "ONION: A Simple and Effective Defense Against Textual Backdoor Attacks"): drop the
words of a question whose removal makes it much more probable under a language model of clean questions.

The paper scores with GPT-2. Two language models are offered: ``lm: gemma3-270m``, a real pre-trained causal LM
(Gemma 3 270M from the ``[pretrained]`` extra, as ONION's GPT-2 is), and ``lm: ngram`` (the default, nothing to
install), a word-level n-gram model with interpolated Kneser-Ney smoothing trained on the clean questions of the
training set. (nltk's KneserNeyInterpolated gives unseen words probability zero, an infinite perplexity, and
kenlm's Python module cannot train; the model is a few lines.)
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Annotated, Dict, Iterable, List, Literal, Optional, Sequence, Tuple

from mmguard.core.errors import UserError
from mmguard.core.params import between
from mmguard.core.registry import PROBES
from mmguard.data.sample import Sample
from mmguard.probes.base import TextProbe

BOS, EOS = "<s>", "</s>"
_TOKEN = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark on its own
_WORD = re.compile(r"\S+")            # what ONION removes: whitespace-separated words


def lm_tokens(text: str) -> List[str]:
    return _TOKEN.findall(text.lower())


class KneserNey:
    """A word n-gram model with interpolated Kneser-Ney smoothing (one absolute ``discount``; Chen & Goodman
    1998). The highest order uses raw counts, lower orders continuation counts (how many distinct words
    precede the n-gram); the unigram level interpolates with a uniform distribution over the vocabulary plus
    one unknown word, so an unseen word gets a small probability rather than zero."""

    def __init__(self, sentences: Iterable[Sequence[str]], order: int, discount: float):
        self.order, self.discount = order, discount
        grams: List[Counter] = [Counter() for _ in range(order + 1)]  # grams[k]: k-gram -> count
        for tokens in sentences:
            seq = [BOS] * (order - 1) + list(tokens) + [EOS]
            for end in range(order, len(seq) + 1):
                grams[order][tuple(seq[end - order:end])] += 1
        for k in range(order - 1, 0, -1):  # each distinct (k+1)-gram is one left extension of its suffix
            for gram in grams[k + 1]:
                grams[k][gram[1:]] += 1
        self.grams = grams
        # per order: context -> (total count after it, number of distinct words after it)
        self.contexts: List[Dict[Tuple[str, ...], Tuple[int, int]]] = [{} for _ in range(order + 1)]
        for k in range(1, order + 1):
            acc: Dict[Tuple[str, ...], List[int]] = defaultdict(lambda: [0, 0])
            for gram, count in grams[k].items():
                acc[gram[:-1]][0] += count
                acc[gram[:-1]][1] += 1
            self.contexts[k] = {h: (total, types) for h, (total, types) in acc.items()}
        self.vocabulary = {gram[0] for gram in grams[1]}

    def prob(self, word: str, context: Sequence[str]) -> float:
        """P(word | the last order-1 words of ``context``), from the unigram level up."""
        p = 1.0 / (len(self.vocabulary) + 1)
        for k in range(1, self.order + 1):
            h = tuple(context[len(context) - (k - 1):]) if k > 1 else ()
            total, types = self.contexts[k].get(h, (0, 0))
            if total:  # an unseen context keeps the lower-order estimate
                count = self.grams[k].get(h + (word,), 0)
                p = (max(count - self.discount, 0.0) + self.discount * types * p) / total
        return p

    def perplexity(self, tokens: Sequence[str]) -> float:
        seq = [BOS] * (self.order - 1) + list(tokens) + [EOS]
        n = self.order
        logs = [math.log(self.prob(seq[i], seq[i - n + 1:i])) for i in range(n - 1, len(seq))]
        return math.exp(-sum(logs) / len(logs))

    def perplexities(self, texts: Sequence[str]) -> List[float]:
        return [self.perplexity(lm_tokens(t)) for t in texts]


class CausalLM:
    """Perplexity under a pre-trained causal language model (Gemma 3 270M, the ``[pretrained]`` extra): the mean
    token negative log-likelihood after BOS, exponentiated, texts scored in padded batches without gradient."""

    def __init__(self, batch_size: int = 64):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mmguard.models.weights import gemma3_270m_folder
        from mmguard.models.zoo import cache_dir

        folder = gemma3_270m_folder(cache_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
        self.batch_size = batch_size

    def perplexities(self, texts: Sequence[str]) -> List[float]:
        import torch

        out: List[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[start:start + self.batch_size]), return_tensors="pt", padding=True)
            with torch.no_grad():
                logits = self.model(**enc).logits[:, :-1].float()
            target, mask = enc.input_ids[:, 1:], enc.attention_mask[:, 1:].bool()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
            mean = (nll * mask).sum(1) / mask.sum(1).clamp(min=1)
            out += mean.exp().tolist()
        return out


@PROBES.register("onion")
class Onion(TextProbe):
    """ONION on each question: with p0 the perplexity of the question and p_i its perplexity without word i
    (a whitespace-separated word), word i is removed when its suspicion f_i = p0 - p_i exceeds ``threshold``.
    ``lm: ngram``: a word n-gram model of ``order`` (1 to 5) with interpolated Kneser-Ney smoothing of
    ``discount`` (in (0, 1]), trained on the lower-cased CLEAN questions of the training set (words and
    punctuation marks as tokens): the probe is set-level and needs ``clean``. ``lm: gemma3-270m``: Gemma 3 270M's
    perplexity, as ONION's GPT-2 (order and discount are the n-gram's and unused; clean is not needed). Answers, choices and images are
    kept; a question with nothing to remove, or of one word, is kept as it is; a removed word takes the
    whitespace before it along (the first word, the whitespace after it). Deterministic."""

    set_level = True

    def __init__(self, threshold: float = 0.0, order: Annotated[int, between(1, 5)] = 3,
                 discount: Annotated[float, between(0, 1, lo_open=True)] = 0.75,
                 lm: Literal["ngram", "gemma3-270m"] = "ngram"):
        self.threshold, self.order, self.discount, self.lm_name = threshold, order, discount, lm
        self.lm = None
        self._scores: Dict[str, List[float]] = {}  # questions repeat across a data set: score each once

    def prepare(self, samples: List[Sample], clean: Optional[List[Sample]], seed: int) -> List[Sample]:
        self._scores = {}
        if self.lm_name == "gemma3-270m":
            self.lm = CausalLM()
            return list(samples)
        if not clean:
            raise UserError("probe 'onion' needs the clean training samples to train its language model on "
                            "(apply(samples, clean=...) or plan(samples, clean)); got none")
        self.lm = KneserNey((lm_tokens(s.question) for s in clean), self.order, self.discount)
        return list(samples)

    def suspicion(self, question: str) -> List[float]:
        """f_i = p0 - p_i for each whitespace-separated word of ``question``, in order."""
        if self.lm is None:
            raise UserError("probe 'onion' has no language model yet: it is trained on the clean samples in "
                            "prepare (apply or plan with clean=...)")
        if question not in self._scores:
            words = [m.group() for m in _WORD.finditer(question)]
            variants = [" ".join(words)] + [" ".join(w for j, w in enumerate(words) if j != i)
                                            for i in range(len(words))]
            p0, *without = self.lm.perplexities(variants)
            self._scores[question] = [p0 - p for p in without]
        return self._scores[question]

    def transform_text(self, question: str) -> str:
        words = list(_WORD.finditer(question))
        keep = [f <= self.threshold for f in self.suspicion(question)]
        if len(words) < 2 or all(keep):  # removing the only word would leave no question
            return question
        out, first = question[:words[0].start()], True
        for i, (word, kept) in enumerate(zip(words, keep)):
            if kept:
                out += ("" if first else question[words[i - 1].end():word.start()]) + word.group()
                first = False
        return out + question[words[-1].end():]
