"""Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): windowed ViT, 2x2 patch merger, Qwen2 LM, M-RoPE.

``QwenVLMixin`` holds what Qwen2.5-VL and Qwen3-VL share (qwen3_vl.py imports it): the Qwen2-VL image
processor (smart_resize to multiples of patch*merge, temporal patch 2, pixels flattened patch by patch next
to an ``image_grid_thw``), the ``<|vision_start|> <|image_pad|>*n <|vision_end|>`` image span, and the
``mm_token_type_ids`` from which the model builds its 3-D M-RoPE positions (PITFALLS 2).
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLTextConfig,
                          Qwen2_5_VLVisionConfig)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family
from mmguard.core.constants import CLIP_MEAN, CLIP_STD

# The Qwen2 tokenizer's added tokens, in their real order (151643 <|endoftext|> ... 151656 <|video_pad|>).
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
                 "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                 "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# The real Qwen2-VL / Qwen2.5-VL chat template (image/video/text content), default system prompt included.
CHAT_TEMPLATE = (
    '{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}'
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}'
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    '{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}'
    'Picture {{ image_count.value }}: {% endif %}'
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    '{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}'
    'Video {{ video_count.value }}: {% endif %}'
    "<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}'
)


def mrope_section(head_dim: int) -> List[int]:
    """(t, h, w) rotary sections summing to head_dim / 2 (PITFALLS 2), h and w equal as in the real ones."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def tiny_qwen_tokenizer(chat_template: str):
    return build_tiny_tokenizer(QWEN_SPECIALS, pad="<|endoftext|>", eos="<|im_end|>",
                                chat_template=chat_template)


def tiny_qwen_image_processor(patch: int, merge: int, mean: Sequence[float], std: Sequence[float]):
    """A real Qwen2-VL PIL processor at tiny scale. min_pixels = (2*patch*merge)^2 as the real 56*56 is; a
    32x32 image is then a multiple of patch*merge (8) inside [min, max] and passes through unresized."""
    factor = patch * merge
    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=merge, temporal_patch_size=2,
                                    min_pixels=(2 * factor) ** 2, max_pixels=factor * factor * 256,
                                    image_mean=list(mean), image_std=list(std))


def _size(ip, key: str) -> int:
    size = ip.size
    return int(size[key] if isinstance(size, dict) else getattr(size, key))


class QwenVLMixin:
    """Processing, image span and M-RoPE token types shared by the Qwen VL families."""

    #: the system turn the chat template adds when the conversation has none ("" for none)
    system_prompt: str = ""
    projector_names: Tuple[str, ...] = ("visual.merger",)

    def template_pieces(self) -> TemplatePieces:
        system = f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n" if self.system_prompt else ""
        return TemplatePieces(prefix=system + "<|im_start|>user\n", between="", after_answer="<|im_end|>\n",
                              before_answer="<|im_end|>\n<|im_start|>assistant\n")

    # --- image processing (Qwen2VLImageProcessor: smart_resize, rescale, normalize, patchify)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        patch, merge = ip.patch_size, ip.merge_size
        rh, rw = height, width
        if ip.do_resize:
            rh, rw = smart_resize(height, width, factor=patch * merge, min_pixels=_size(ip, "shortest_edge"),
                                  max_pixels=_size(ip, "longest_edge"))
        return {"resized": (rh, rw), "grid": (rh // patch, rw // patch), "patch": patch, "merge": merge,
                "temporal": ip.temporal_patch_size}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        if ip.do_rescale:
            x = x * (255.0 * ip.rescale_factor)
        if ip.do_normalize:
            x = normalize(x, ip.image_mean, ip.image_std)
        # patchify exactly as Qwen2VLImageProcessorPil.patchify: merge blocks first, then the patches inside a
        # block, each patch flattened as (C, T, p, p) with the still image repeated over T
        c = x.shape[0]
        gh, gw = layout["grid"]
        p, m, t = layout["patch"], layout["merge"], layout["temporal"]
        x = x.reshape(c, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        x = x.unsqueeze(5).expand(*x.shape[:5], t, p, p)
        return {"pixel_values": x.reshape(gh * gw, c * t * p * p),
                "image_grid_thw": torch.tensor([[1, gh, gw]], dtype=torch.long)}

    def batch_pixel_inputs(self, per_image: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        # Qwen takes all images' patches as one flat sequence, split again by image_grid_thw
        return {k: torch.cat([d[k] for d in per_image]) for k in per_image[0]}

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        cfg = self.model.config
        gh, gw = layout["grid"]
        n = (gh // layout["merge"]) * (gw // layout["merge"])
        ids = [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id]
        return ids, list(range(1, n + 1))

    def patch_boxes(self, layout) -> torch.Tensor:
        # one token per merge x merge block of patches, raster order; the resize maps the whole image, so
        # fractions of the resized grid are fractions of the raw image
        gh, gw = layout["grid"][0] // layout["merge"], layout["grid"][1] // layout["merge"]
        ys = torch.arange(gh, dtype=torch.float32)
        xs = torch.arange(gw, dtype=torch.float32)
        y0, y1 = (ys / gh)[:, None].expand(gh, gw), ((ys + 1) / gh)[:, None].expand(gh, gw)
        x0, x1 = (xs / gw)[None].expand(gh, gw), ((xs + 1) / gw)[None].expand(gh, gw)
        return torch.stack([y0, x0, y1, x1], -1).reshape(-1, 4)

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        # As the real processor's create_mm_token_type_ids: 1 on image pads only (not vision start/end).
        # Without it Qwen2.5-VL silently falls back to 1-D positions.
        cfg = self.model.config
        types = (input_ids == cfg.image_token_id).long() + 2 * (input_ids == cfg.video_token_id).long()
        return {"mm_token_type_ids": types * attention_mask.long()}


@register_family("qwen2_5_vl")
class Qwen2_5_VLAdapter(QwenVLMixin, LVLMAdapter):
    family = "qwen2_5_vl"
    system_prompt = "You are a helpful assistant."

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 4, merge: int = 2, hidden: int = 64,
             layers: int = 2):
        # image_size is not needed: smart_resize takes any size (32x32 passes unresized)
        tok = tiny_qwen_tokenizer(CHAT_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        heads = 4
        vision = Qwen2_5_VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                        patch_size=patch, spatial_merge_size=merge, temporal_patch_size=2,
                                        out_hidden_size=hidden,
                                        # windowed block 0, full block 1; windows of 4x4 merged tokens as the
                                        # real 112 px / 28 px (a 32x32 image is one window, as 112x112 is)
                                        window_size=4 * patch * merge, fullatt_block_indexes=[1])
        text = Qwen2_5_VLTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                    num_hidden_layers=layers, num_attention_heads=heads,
                                    num_key_value_heads=2, max_position_embeddings=512,
                                    max_window_layers=layers,
                                    rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                     "mrope_section": mrope_section(hidden // heads)},
                                    bos_token_id=ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                                    pad_token_id=tok.pad_token_id)
        config = Qwen2_5_VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                  image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                                  vision_start_token_id=ids("<|vision_start|>"),
                                  vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)
        model = Qwen2_5_VLForConditionalGeneration(config)
        return cls(model, tok, tiny_qwen_image_processor(patch, merge, CLIP_MEAN, CLIP_STD), name)
