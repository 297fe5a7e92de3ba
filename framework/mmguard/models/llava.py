"""LLaVA (LlavaForConditionalGeneration): CLIP vision tower, MLP projector, Llama language model."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import center_crop, normalize, pil_resize, resize_output_size
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family
from mmguard.core.constants import CLIP_MEAN, CLIP_STD

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %} {% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@register_family("llava")
class LlavaAdapter(LVLMAdapter):
    family = "llava"
    batched_preprocess = True  # resize, crop, rescale, normalize: all work on a stack

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 8, hidden: int = 64, layers: int = 2):
        tok = build_tiny_tokenizer(["<image>"], pad="<pad>", eos="</s>", bos="<s>", chat_template=CHAT_TEMPLATE)
        # initializer_factor=5: at CLIP's default init scale a 32-wide random tower gives near-constant image
        # features and the LM learns to ignore them (colour loss stuck at chance for 1500 steps); at 5 it sees
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=image_size, patch_size=patch, projection_dim=32, initializer_factor=5.0)
        text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
        # vision_feature_layer=-1: with a 2-layer tower the default -2 would ignore half of it (PITFALLS 3)
        config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids(
            "<image>"), vision_feature_layer=-1, vision_feature_select_strategy="default",
            projector_hidden_act="gelu")
        model = LlavaForConditionalGeneration(config)
        processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                          crop_size={"height": image_size, "width": image_size},
                                          image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
        return cls(model, tok, processor, name)

    def template_pieces(self) -> TemplatePieces:
        return TemplatePieces(prefix="USER: ", between="\n", before_answer=" ASSISTANT:", after_answer="</s>",
                              answer_prefix=" ")

    # --- image processing (CLIPImageProcessor: resize shortest edge, center crop, rescale, normalize)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        rh, rw = resize_output_size(ip.size, height, width) if ip.do_resize else (height, width)
        ch, cw = (ip.crop_size["height"], ip.crop_size["width"]) if ip.do_center_crop else (rh, rw)
        # the crop's top-left in the resized image, floored as image_transforms.center_crop does (negative where
        # the crop is larger and center_crop pads)
        top, left = (rh - ch) // 2, (rw - cw) // 2
        patch = self.model.config.vision_config.patch_size
        return {"resized": (rh, rw), "crop": (top, left, ch, cw), "grid": (ch // patch, cw // patch)}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        x = center_crop(x, *layout["crop"][2:])
        x = x * ip.rescale_factor * 255.0 if ip.do_rescale else x * 255.0
        return {"pixel_values": normalize(x, ip.image_mean, ip.image_std) if ip.do_normalize else x}

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        gh, gw = layout["grid"]
        n = gh * gw
        return [self.model.config.image_token_index] * n, list(range(n))

    def patch_boxes(self, layout) -> torch.Tensor:
        rh, rw = layout["resized"]
        top, left, ch, cw = layout["crop"]
        gh, gw = layout["grid"]
        ys = torch.arange(gh, dtype=torch.float32)
        xs = torch.arange(gw, dtype=torch.float32)
        y0 = (top + ys * ch / gh) / rh
        y1 = (top + (ys + 1) * ch / gh) / rh
        x0 = (left + xs * cw / gw) / rw
        x1 = (left + (xs + 1) * cw / gw) / rw
        return torch.stack([y0[:, None].expand(gh, gw), x0[None].expand(gh, gw),
                            y1[:, None].expand(gh, gw), x1[None].expand(gh, gw)], -1).reshape(-1, 4).clamp(0, 1)
