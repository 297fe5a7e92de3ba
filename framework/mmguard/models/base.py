"""The face every LVLM family adapter shows: processing, encoding with token spans, attention taps.

A family file subclasses ``LVLMAdapter`` and fills in the few things that differ between families (its tiny
config, its image processor's layout, its chat template pieces, extra per-token inputs). Everything else --
encoding with spans X/T/G/Y, collation, the loss on answer tokens, greedy generation, attention rows -- is
shared here. Adapters know transformers and nothing of Lightning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import re
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from mmguard.data.sample import Sample
from mmguard.models import attention_tap
from mmguard.models.head import contiguous_head_input
from mmguard.models.processing import quantize_ste

SPANS = ("X", "T", "G", "Y")
#: batch entries that are ours, not the model's (labels feed our loss; raw images feed adversarial training)
NOT_MODEL_INPUTS = ("labels", "raw_images")
@dataclasses.dataclass
class Encoded:
    """One tokenized sample. ``spans[k]`` holds the sequence positions of token set k (METHOD.md)."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    spans: Dict[str, torch.Tensor]
    answer_start: int
    layout: Any = None
    question_text: str = ""

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclasses.dataclass
class AnswerLogits:
    """The logits that predict the answer tokens, and only those: ``logits`` (N, V) in row-major (sample,
    position) order, ``targets`` (N,) the token each predicts, ``sample`` (N,) its batch index. The LM head runs
    on these N positions alone (a few per sample), not on the whole sequence: a sequence of hundreds of tokens
    against a vocabulary of 150k costs the head (and its log-softmax) far more than the answer's few."""

    logits: torch.Tensor
    targets: torch.Tensor
    sample: torch.Tensor
    batch_size: int

    @staticmethod
    def predicting(labels: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: position t predicts a labelled token at t + 1."""
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != -100
        return keep

    @classmethod
    def select(cls, logits: torch.Tensor, labels: torch.Tensor) -> "AnswerLogits":
        """From full (B, L, V) logits and unshifted labels (-100 off the answer)."""
        keep = cls.predicting(labels)
        return cls.of_kept(logits[keep], labels, keep)

    @classmethod
    def of_kept(cls, kept: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> "AnswerLogits":
        targets = labels[:, 1:][keep[:, :-1]]
        sample = keep.nonzero()[:, 0]
        return cls(kept, targets.to(kept.device), sample.to(kept.device), int(labels.shape[0]))


@dataclasses.dataclass
class TemplatePieces:
    """The chat template cut at the places where the image, question and answer go.

    Rendered as ``prefix + <image> + between + question + before_answer + answer_prefix + answer +
    after_answer``.
    """

    prefix: str
    between: str
    before_answer: str
    after_answer: str
    answer_prefix: str = ""


class LVLMAdapter:
    """Wraps a transformers LVLM, its tokenizer and a differentiable twin of its image processor."""

    family: str = ""
    #: names of the multimodal projector modules (for the projector-only victims)
    projector_names: Tuple[str, ...] = ("multi_modal_projector",)
    #: LoRA targets inside the language model
    lora_targets: Tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __init__(self, model, tokenizer, image_processor, name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.pieces = self.template_pieces()
        self._piece_ids = {k: self._tok(getattr(self.pieces, k)) for k in ("prefix", "between", "before_answer",
                                                                          "after_answer")}
        self.enable_attention_tap()

    # A family whose ``preprocess`` is resizes, crops and per-pixel maps of (..., 3, H, W), and whose batched inputs
    # are the per-image ones stacked, says so: ``process`` then runs images of one size as one stack.
    batched_preprocess = False

    # ----------------------------------------------------------------- family hooks
    def template_pieces(self) -> TemplatePieces:
        raise NotImplementedError

    def layout(self, height: int, width: int) -> Any:
        """Resolution, tiling and grid choices made as the real processor makes them, for one image size."""
        raise NotImplementedError

    def preprocess(self, pixels: torch.Tensor, layout: Any) -> Dict[str, torch.Tensor]:
        """One image (3, H, W) in [0, 1] (already 8-bit quantized) -> this image's model inputs."""
        raise NotImplementedError

    def batch_pixel_inputs(self, per_image: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Join per-image processor outputs into the model's batched kwargs (stack by default)."""
        return {k: torch.stack([d[k] for d in per_image]) for k in per_image[0]}

    def image_token_ids(self, layout: Any) -> Tuple[List[int], List[int]]:
        """Token ids standing for the image, and the indices among them that are image tokens proper (X)."""
        raise NotImplementedError

    def patch_boxes(self, layout: Any) -> torch.Tensor:
        """(num X tokens, 4) boxes (y0, x0, y1, x1) in [0, 1] of the raw image that each image token covers."""
        raise NotImplementedError

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Per-token inputs some families need (token_type_ids, mm_token_type_ids); (B, L) each."""
        return {}

    def real_process(self, images) -> Dict[str, torch.Tensor]:
        """The family's real Hugging Face image processor on PIL images (used to test ``process``)."""
        return dict(self.image_processor(images=images, return_tensors="pt"))

    @property
    def attention_modules(self) -> List[torch.nn.Module]:
        """The self-attention module of each language-model layer, in order."""
        return [layer.self_attn for layer in self.language_model.layers]

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.language_model

    # ----------------------------------------------------------------- processing
    def process(self, images: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Raw pixels in [0, 1] -> model pixel inputs, differentiable (8-bit quantization with a straight-through
        gradient, as the real pipeline sees 8-bit images)."""
        shapes = {tuple(img.shape) for img in images}
        if self.batched_preprocess and len(images) > 1 and len(shapes) == 1:
            # one call on the stack: per image, the Python and dispatch overhead of a small image is the cost
            h, w = images[0].shape[-2:]
            return self.preprocess(quantize_ste(torch.stack(list(images))), self.layout(h, w))
        outs = [self.preprocess(quantize_ste(img), self.layout(img.shape[-2], img.shape[-1])) for img in images]
        return self.batch_pixel_inputs(outs)

    def token_patch_means(self, abs_delta: torch.Tensor, layout: Any) -> torch.Tensor:
        """Mean of a (3, H, W) map -- or a (B, 3, H, W) batch of maps of one layout -- over the region each image
        token covers -> (num X tokens,) or (B, num X tokens)."""
        batched = abs_delta.dim() == 4
        maps = abs_delta if batched else abs_delta[None]
        h, w = maps.shape[-2:]
        boxes = self.patch_boxes(layout)
        integral = F.pad(maps.mean(1).cumsum(1).cumsum(2), (1, 0, 1, 0))
        y0 = (boxes[:, 0] * h).floor().long().clamp(0, h - 1)
        x0 = (boxes[:, 1] * w).floor().long().clamp(0, w - 1)
        y1 = torch.maximum((boxes[:, 2] * h).ceil().long().clamp(1, h), y0 + 1)
        x1 = torch.maximum((boxes[:, 3] * w).ceil().long().clamp(1, w), x0 + 1)
        total = integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]
        means = total / ((y1 - y0) * (x1 - x0)).to(total.dtype)
        return means if batched else means[0]

    # ----------------------------------------------------------------- text
    def _tok(self, text: str) -> List[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

    @staticmethod
    def insert_trigger(question: str, trigger: Optional[str], at: Optional[int] = None) -> Tuple[str, int]:
        """Insert the trigger string into the question at character offset ``at`` (default: after it; nothing
        replaced; ``attacks/insertion.py`` chooses offsets); returns the text and the trigger's offset."""
        at = len(question) if at is None else int(at)
        if not 0 <= at <= len(question):
            raise ValueError(f"trigger offset {at} is outside the question (length {len(question)})")
        if not trigger:
            return question, at
        return question[:at] + trigger + question[at:], at

    def encode(self, sample: Sample, trigger: Optional[str] = None, with_answer: bool = True,
               trigger_at: Optional[int] = None) -> Encoded:
        """Tokens, labels and spans of a sample, with ``trigger`` inserted into its question at character offset
        ``trigger_at`` (default: the question's end)."""
        width, height = sample.pil.size
        layout = self.layout(height, width)
        image_ids, image_token_index = self.image_token_ids(layout)
        # the trigger goes into the question itself (before any multiple-choice options), exactly where the
        # released data set will carry it
        raw_question, trig_at = self.insert_trigger(sample.question, trigger, trigger_at)
        trig_end = trig_at + len(trigger or "")
        question = sample.replace(question=raw_question).prompt_question
        q = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        q_ids, offsets = q.input_ids, q.offset_mapping
        in_trigger = [bool(trigger) and start < trig_end and end > trig_at for start, end in offsets]

        ids: List[int] = list(self._piece_ids["prefix"])
        image_at = len(ids)
        ids += image_ids
        ids += self._piece_ids["between"]
        question_at = len(ids)
        ids += q_ids
        ids += self._piece_ids["before_answer"]
        answer_start = len(ids)
        answer_ids = self._tok(self.pieces.answer_prefix + sample.answer) if with_answer else []
        ids += answer_ids
        if with_answer:
            ids += self._piece_ids["after_answer"]
        input_ids = torch.tensor(ids, dtype=torch.long)
        labels = torch.full_like(input_ids, -100)
        if with_answer:
            end = answer_start + len(answer_ids) + self._answer_end_tokens()
            labels[answer_start:end] = input_ids[answer_start:end]
        spans = {
            "X": torch.tensor([image_at + i for i in image_token_index], dtype=torch.long),
            "T": torch.tensor([question_at + i for i, t in enumerate(in_trigger) if not t], dtype=torch.long),
            "G": torch.tensor([question_at + i for i, t in enumerate(in_trigger) if t], dtype=torch.long),
            "Y": torch.arange(answer_start, answer_start + len(answer_ids), dtype=torch.long),
        }
        return Encoded(input_ids, labels, spans, answer_start, layout, question)

    def _answer_end_tokens(self) -> int:
        """How many template tokens after the answer are learned (the end-of-turn token, so that generation
        stops)."""
        return min(1, len(self._piece_ids["after_answer"]))

    def stop_ids(self) -> List[int]:
        ids = {self.tokenizer.eos_token_id}
        if self._piece_ids["after_answer"]:
            ids.add(self._piece_ids["after_answer"][0])
        return [i for i in ids if i is not None]

    # ----------------------------------------------------------------- batches
    def collate_tokens(self, encoded: Sequence[Encoded], padding_side: Literal["right", "left"] = "right"
                       ) -> Dict[str, torch.Tensor]:
        """Pad a batch's tokens (right for training; left for generation, so that every prompt ends at the last
        column): input ids, attention mask, labels and the family's per-token inputs."""
        length = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        labels = torch.full((len(encoded), length), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        offsets = [length - len(e) if padding_side == "left" else 0 for e in encoded]
        for i, (e, at) in enumerate(zip(encoded, offsets)):
            input_ids[i, at:at + len(e)] = e.input_ids
            labels[i, at:at + len(e)] = e.labels
            attention_mask[i, at:at + len(e)] = 1
        answer_start = torch.tensor([e.answer_start + at for e, at in zip(encoded, offsets)])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        batch.update(self.extra_token_inputs(input_ids, attention_mask, answer_start))
        return batch

    def collate(self, encoded: Sequence[Encoded], images: Sequence[torch.Tensor],
                padding_side: Literal["right", "left"] = "right") -> Dict[str, torch.Tensor]:
        """Tokens (``collate_tokens``) and pixel inputs (``images`` raw, in [0, 1], differentiable)."""
        return {**self.collate_tokens(encoded, padding_side), **self.process(images)}

    def forward(self, batch: Dict[str, torch.Tensor]):
        """Model logits for a collated batch (labels are used by our own loss, not passed to the model)."""
        return self.model(**self.model_inputs(batch), use_cache=False).logits

    def model_inputs(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """The keyword arguments of a full-sequence forward pass (no cache) for a collated batch."""
        return {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}

    def answer_logits(self, batch: Dict[str, torch.Tensor]) -> AnswerLogits:
        """The logits of the answer tokens only (``AnswerLogits``): what every loss on the answer needs, with
        the LM head applied to those positions alone (transformers' ``logits_to_keep`` as a per-sample mask)."""
        keep = AnswerLogits.predicting(batch["labels"]).to(self.device)
        logits = self.model(**self.model_inputs(batch), use_cache=False, logits_to_keep=keep).logits
        if logits.dim() == 3:  # a family that ignores the mask returns every position
            logits = logits[keep]
        return AnswerLogits.of_kept(logits, batch["labels"].to(self.device), keep)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        dev = self.device
        return {k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, samples: Sequence[Sample], max_new_tokens: int = 8, batch_size: int = 32) -> List[str]:
        """Greedy decoding with a KV cache: each prompt is run once, then one token per step.

        Prompts of any length and images of any size decode together: they are left-padded (the model takes
        its position ids from the attention mask, so padding shifts nothing) and sorted by length so that
        little padding is run. Each answer is the text of its tokens up to the first stop token.
        """
        was_training = self.model.training
        self.model.eval()
        encs = [self.encode(s, with_answer=False) for s in samples]
        order = sorted(range(len(samples)), key=lambda i: len(encs[i]))
        stop = self.stop_ids()
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stop,
                                  pad_token_id=self.tokenizer.pad_token_id)
        outputs: List[str] = [""] * len(samples)
        head = self.model.get_output_embeddings()
        hook = None if head is None else head.register_forward_pre_hook(contiguous_head_input)
        try:
            with self._only_generation_config(config):
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    batch = self.collate([encs[i] for i in idx], [samples[i].pixels() for i in idx],
                                         padding_side="left")
                    prompt_len = batch["input_ids"].shape[1]
                    kwargs = self.to_device({k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS})
                    new_tokens = self.model.generate(**kwargs, generation_config=config)[:, prompt_len:].tolist()
                    for row, i in enumerate(idx):
                        toks = list(itertools.takewhile(lambda t: t not in stop, new_tokens[row]))
                        outputs[i] = self.tokenizer.decode(toks, skip_special_tokens=True).strip()
        finally:
            self.model.train(was_training)
            if hook is not None:
                hook.remove()
        return outputs

    @contextlib.contextmanager
    def _only_generation_config(self, config: GenerationConfig) -> Iterator[None]:
        """``model.generate`` fills every option its config leaves unset from ``model.generation_config``: a
        checkpoint's defaults (sampling, repetition penalty, suppressed tokens) would turn greedy argmax into
        something else. Within the block the model's own config is the one given."""
        saved = self.model.generation_config
        self.model.generation_config = config
        try:
            yield
        finally:
            self.model.generation_config = saved

    # ----------------------------------------------------------------- attention
    def enable_attention_tap(self) -> None:
        """Route the language model's attention through ``mmguard_tap`` (SDPA plus optional row capture)."""
        self.model.set_attn_implementation({"text_config": attention_tap.TAP_NAME})

    @contextlib.contextmanager
    def attention_rows(self, layers: Sequence[int], rows: Sequence[torch.Tensor]) -> Iterator[Dict]:
        """``with adapter.attention_rows([0], rows) as taps: adapter.forward(batch)`` then
        ``taps[0].probs[b]`` is the (heads, len(rows[b]), keys) attention of layer 0 for batch element b."""
        with attention_tap.tap_rows(self.attention_modules, layers, rows) as taps:
            yield taps

    def eager_attentions(self, batch: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Reference: full eager attention of every language-model layer, (B, heads, L, L) each. For tests."""
        self.model.set_attn_implementation("eager")
        try:
            with torch.no_grad():
                kwargs = {k: v for k, v in batch.items() if k != "labels"}
                out = self.model(**kwargs, output_attentions=True, use_cache=False)
        finally:
            self.model.set_attn_implementation("sdpa")
            self.enable_attention_tap()
        return list(out.attentions)

    # ----------------------------------------------------------------- misc
    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "image_token_id", None) or getattr(cfg, "image_token_index")

    def collapse_image_tokens(self, text: str) -> str:
        """Rendered prompt -> the chat template's form, with the expanded image tokens folded back into the
        template's image placeholder (used to check our pieces against the real chat template)."""
        tok = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return re.sub(f"(?:{re.escape(tok)})+", tok, text)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())
