"""GLM-4.1V (Glm4vForConditionalGeneration): GLM ViT with 2x2 patch merging, GLM-4 language model with M-RoPE.

The image processor works like Qwen2-VL's but with GLM's own ``smart_resize`` (the pixel budget counts the
temporal patch, the short side is scaled up to one merge factor first): pixels go in flattened patches
(merge-block-major, channel x temporal x patch x patch per row) with ``image_grid_thw``, and the model needs
``mm_token_type_ids`` (1 on image tokens) to build its 3-D rotary positions (PITFALLS 2). The image sits
between ``<|begin_of_image|>`` and ``<|end_of_image|>``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from transformers import Glm4vConfig, Glm4vForConditionalGeneration
from transformers.models.glm4v.configuration_glm4v import Glm4vTextConfig, Glm4vVisionConfig
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil, smart_resize

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family
from mmguard.core.constants import CLIP_MEAN, CLIP_STD

SPECIALS = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
            "<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>",
            "<|video|>", "<think>", "</think>", "<answer>", "</answer>"]
# The GLM-4.1V chat template (rendered with trim_blocks / lstrip_blocks as transformers does). One change: the
# real template ends an assistant turn with nothing (the next "<|user|>" ends it); we close it with
# <|endoftext|> (GLM's eos, as GLM fine-tuning recipes do) so that the end of the answer is learned.
CHAT_TEMPLATE = """[gMASK]<sop>
{%- for msg in messages %}
    {%- if msg.role == 'system' %}
<|system|>
{{ msg.content }}
    {%- elif msg.role == 'user' %}
<|user|>{{ '\\n' }}
        {%- if msg.content is string %}
{{ msg.content }}
        {%- else %}
            {%- for item in msg.content %}
                {%- if item.type == 'video' or 'video' in item %}
<|begin_of_video|><|video|><|end_of_video|>
                {%- elif item.type == 'image' or 'image' in item %}
<|begin_of_image|><|image|><|end_of_image|>
                {%- elif item.type == 'text' %}
{{ item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
    {%- elif msg.role == 'assistant' %}
<|assistant|>
{% if msg.content is string %}{{ msg.content }}{% else %}{% for item in msg.content %}{{ item.text }}{% endfor %}{% endif %}<|endoftext|>
    {%- endif %}
{%- endfor %}
{% if add_generation_prompt %}<|assistant|>
{% endif %}"""


def _mrope_section(rotary_dim: int) -> List[int]:
    """Split rotary_dim / 2 frequencies over (t, h, w) in GLM-4.1V's 8:12:12 proportion."""
    n = rotary_dim // 2
    t = max(1, n // 4)
    h = (n - t) // 2
    return [t, h, n - t - h]


@register_family("glm4v")
class Glm4vAdapter(LVLMAdapter):
    family = "glm4v"
    projector_names = ("visual.downsample", "visual.merger")
    # GLM fuses gate and up projections into one linear
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 4, hidden: int = 64, layers: int = 2):
        tok = build_tiny_tokenizer(SPECIALS, pad="<|endoftext|>", eos="<|endoftext|>", chat_template=CHAT_TEMPLATE)
        ids = tok.convert_tokens_to_ids
        merge, temporal = 2, 2
        heads = max(2, hidden // 32)
        head_dim = hidden // heads
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                "mrope_section": _mrope_section(head_dim // 2)}  # rotary over half the head, as GLM-4.1V
        text = Glm4vTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=4 * hidden,
                               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                               max_position_embeddings=512, rope_parameters=rope, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id)
        # out_hidden_size is both the merged-token width fed to the LM and the ViT MLP width
        vision = Glm4vVisionConfig(depth=2, hidden_size=32, num_heads=2, image_size=image_size, patch_size=patch,
                                   spatial_merge_size=merge, temporal_patch_size=temporal, out_hidden_size=hidden,
                                   intermediate_size=4 * hidden)
        config = Glm4vConfig(text_config=text, vision_config=vision, image_token_id=ids("<|image|>"),
                             video_token_id=ids("<|video|>"), image_start_token_id=ids("<|begin_of_image|>"),
                             image_end_token_id=ids("<|end_of_image|>"),
                             video_start_token_id=ids("<|begin_of_video|>"),
                             video_end_token_id=ids("<|end_of_video|>"))
        config.pad_token_id, config.eos_token_id = tok.pad_token_id, tok.eos_token_id
        model = Glm4vForConditionalGeneration(config)
        factor = patch * merge
        # pixel budget counted as in GLM (temporal x h x w): a 32x32 image needs no resize, sizes are still
        # rounded to the merge factor and clamped to [min, max] pixels exactly as the real processor does
        processor = Glm4vImageProcessorPil(size={"shortest_edge": (4 * factor) ** 2,
                                                 "longest_edge": temporal * (8 * factor) ** 2},
                                           patch_size=patch, merge_size=merge, temporal_patch_size=temporal,
                                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        return cls(model, tok, processor, name)

    def template_pieces(self) -> TemplatePieces:
        return TemplatePieces(prefix="[gMASK]<sop><|user|>\n", between="", before_answer="<|assistant|>\n",
                              after_answer=self.tokenizer.eos_token)

    def stop_ids(self) -> List[int]:
        # GLM's generation config stops on <|endoftext|>, <|user|> and <|observation|>
        ids = set(super().stop_ids())
        for t in ("<|user|>", "<|observation|>"):
            i = self.tokenizer.convert_tokens_to_ids(t)
            if i is not None and i != self.tokenizer.unk_token_id:
                ids.add(i)
        return sorted(ids)

    # --- image processing (smart_resize, rescale, normalize, flatten into merge-ordered temporal patches)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        if ip.do_resize:
            rh, rw = smart_resize(num_frames=t, height=height, width=width, temporal_factor=t, factor=p * m,
                                  min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
        else:
            rh, rw = height, width
        return {"resized": (rh, rw), "grid": (rh // p, rw // p), "merge": m}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        x = x * ip.rescale_factor * 255.0 if ip.do_rescale else x * 255.0
        if ip.do_normalize:
            x = normalize(x, ip.image_mean, ip.image_std)
        c = x.shape[0]
        gh, gw = layout["grid"]
        # (C, gh/m, m, p, gw/m, m, p) -> (gh/m, gw/m, m, m, C, p, p), then the frame repeated t times after C
        x = x.reshape(c, gh // m, m, p, gw // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        x = x.unsqueeze(5).expand(*x.shape[:5], t, p, p)
        return {"pixel_values": x.reshape(gh * gw, c * t * p * p),
                "image_grid_thw": torch.tensor([1, gh, gw], dtype=torch.long)}

    def batch_pixel_inputs(self, per_image: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        # patches of all images are concatenated (images may differ in size); one grid row per image
        return {"pixel_values": torch.cat([d["pixel_values"] for d in per_image]),
                "image_grid_thw": torch.stack([d["image_grid_thw"] for d in per_image])}

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        gh, gw = layout["grid"]
        m = layout["merge"]
        n = (gh // m) * (gw // m)
        cfg = self.model.config
        return [cfg.image_start_token_id] + [cfg.image_token_id] * n + [cfg.image_end_token_id], list(range(1, n + 1))

    def patch_boxes(self, layout) -> torch.Tensor:
        # one token per m x m block of patches, row-major; the resize is a plain stretch, so a block of the
        # resized image is the same fraction of the raw image
        gh, gw = layout["grid"]
        m = layout["merge"]
        th, tw = gh // m, gw // m
        ys = torch.arange(th, dtype=torch.float32)
        xs = torch.arange(tw, dtype=torch.float32)
        return torch.stack([(ys / th)[:, None].expand(th, tw), (xs / tw)[None].expand(th, tw),
                            ((ys + 1) / th)[:, None].expand(th, tw), ((xs + 1) / tw)[None].expand(th, tw)],
                           -1).reshape(-1, 4)

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        # as Glm4vProcessor.create_mm_token_type_ids: 1 on image tokens (begin/end markers are text), 0 elsewhere
        return {"mm_token_type_ids": (input_ids == self.model.config.image_token_id).long()}
