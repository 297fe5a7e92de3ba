"""One batch as one surrogate sees it: what an attack's objective is computed on.

The loop encodes and collates a batch's tokens once per batch and round (``SurrogateView``); between PGD steps
only the pixels change (``with_images``). A ``CleanPass`` holds the batch's clean inputs (no delta, no trigger)
for objectives that compare against them (CRS); it runs at most once per batch, whatever triggers and pixels are
tried on it. No Lightning here: adapters and tensors only.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from mmguard.data.sample import Sample
from mmguard.models.base import AnswerLogits, Encoded

Rows = Callable[[Encoded], torch.Tensor]


class CleanPass:
    """The clean inputs of a batch and, on demand, their attention rows (computed once, without gradient)."""

    def __init__(self, adapter, samples: Sequence[Sample], images: Sequence[torch.Tensor], layers: Sequence[int]):
        self.adapter, self.samples, self.images, self.layers = adapter, list(samples), list(images), list(layers)
        self._taps = None
        self.encoded: List[Encoded] = []
        self.lengths: Optional[torch.Tensor] = None

    def taps(self, rows_of: Rows) -> Dict:
        if self._taps is None:
            a = self.adapter
            self.encoded = [a.encode(s) for s in self.samples]
            batch = a.to_device(a.collate(self.encoded, [x.detach() for x in self.images]))
            self.lengths = batch["attention_mask"].sum(1).cpu()
            with torch.no_grad(), a.attention_rows(self.layers, [rows_of(e) for e in self.encoded]) as taps:
                a.answer_logits(batch)  # the taps are what is wanted: the LM head only on the answer
            self._taps = taps
        return self._taps


class SurrogateView:
    """A batch encoded (with its triggers) and collated for one surrogate; ``with_images`` sets the pixels.
    ``offsets``: each trigger's character offset in its question (``attacks/insertion.py``; None: the end)."""

    def __init__(self, adapter, samples: Sequence[Sample], triggers: Sequence[Optional[str]],
                 layers: Sequence[int], clean: Optional[CleanPass] = None,
                 offsets: Optional[Sequence[Optional[int]]] = None):
        self.adapter, self.samples, self.layers, self.clean = adapter, list(samples), list(layers), clean
        offsets = list(offsets) if offsets is not None else [None] * len(self.samples)
        if len(offsets) != len(self.samples):
            raise ValueError(f"{len(offsets)} trigger offsets for {len(self.samples)} samples")
        self.encoded = [adapter.encode(s, trigger=t, trigger_at=o) for s, t, o in zip(samples, triggers, offsets)]
        self.tokens = adapter.to_device(adapter.collate_tokens(self.encoded))
        self.pixels: Dict[str, torch.Tensor] = {}
        self.deltas: Optional[Sequence[torch.Tensor]] = None
        self.cache: Dict[str, object] = {}  # what an objective derives from the encodings alone, once per view

    def with_images(self, images: Sequence[torch.Tensor], deltas: Optional[Sequence[torch.Tensor]] = None
                    ) -> "SurrogateView":
        """Set the (differentiable) raw images x + delta; ``deltas`` are what the objective may rank tokens by."""
        self.pixels = self.adapter.to_device(self.adapter.process([x.to(self.adapter.device) for x in images]))
        self.deltas = deltas
        return self

    @property
    def labels(self) -> torch.Tensor:
        return self.tokens["labels"]

    @property
    def lengths(self) -> torch.Tensor:
        return self.tokens["attention_mask"].sum(1).cpu()

    def forward(self, rows: Optional[Sequence[torch.Tensor]] = None) -> Tuple[AnswerLogits, Optional[Dict]]:
        """The answer tokens' logits, and the attention ``rows`` of each sample in the view's layers when asked
        for."""
        batch = {**self.tokens, **self.pixels}
        if rows is None:
            return self.adapter.answer_logits(batch), None
        with self.adapter.attention_rows(self.layers, rows) as taps:
            logits = self.adapter.answer_logits(batch)
        return logits, taps
