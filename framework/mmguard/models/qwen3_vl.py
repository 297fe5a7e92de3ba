"""Qwen3-VL (Qwen3VLForConditionalGeneration): ViT with learned (interpolated) position grid and DeepStack
mergers feeding early LM layers, Qwen3 LM with q/k norms and interleaved M-RoPE.

Processing, image span and M-RoPE token types are Qwen2.5-VL's (``QwenVLMixin``); only the tiny config, the
chat template (no default system turn) and the projector names differ.
"""
from __future__ import annotations

from typing import Tuple

from transformers import (Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLTextConfig,
                          Qwen3VLVisionConfig)

from mmguard.models.base import LVLMAdapter
from mmguard.models.qwen2_5_vl import (QwenVLMixin, mrope_section, tiny_qwen_image_processor,
                                       tiny_qwen_tokenizer)
from mmguard.models.zoo import register_family
from mmguard.core.constants import HALF_MEAN, HALF_STD

# Qwen3-VL Instruct's chat template without the tool-calling branches: a system turn only when given.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}"
    "{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


@register_family("qwen3_vl")
class Qwen3VLAdapter(QwenVLMixin, LVLMAdapter):
    family = "qwen3_vl"
    system_prompt = ""
    # the DeepStack mergers project vision features into the LM too
    projector_names: Tuple[str, ...] = ("visual.merger", "visual.deepstack_merger_list")

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 4, merge: int = 2, hidden: int = 64,
             layers: int = 2):
        tok = tiny_qwen_tokenizer(CHAT_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        heads = 4
        head_dim = hidden // heads
        vision = Qwen3VLVisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                     patch_size=patch, spatial_merge_size=merge, temporal_patch_size=2,
                                     out_hidden_size=hidden,
                                     # learned position grid sized for the native image (interpolated for
                                     # others); one DeepStack tap, as the real tower taps 3 of 27 blocks
                                     num_position_embeddings=(image_size // patch) ** 2,
                                     deepstack_visual_indexes=[0])
        text = Qwen3VLTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                 num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=2,
                                 head_dim=head_dim, max_position_embeddings=512,
                                 rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                  "mrope_interleaved": True,
                                                  "mrope_section": mrope_section(head_dim)},
                                 bos_token_id=ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        config = Qwen3VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                               image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                               vision_start_token_id=ids("<|vision_start|>"),
                               vision_end_token_id=ids("<|vision_end|>"),
                               tie_word_embeddings=False)
        model = Qwen3VLForConditionalGeneration(config)
        return cls(model, tok, tiny_qwen_image_processor(patch, merge, HALF_MEAN, HALF_STD), name)
