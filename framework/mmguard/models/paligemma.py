"""PaliGemma (PaliGemmaForConditionalGeneration): SigLIP vision tower, linear projector, Gemma language model.

The sequence is ``<image> x N + <bos> + prompt + "\\n"`` (the prefix) followed by the answer as the suffix and
``<eos>``, exactly as ``PaliGemmaProcessor(text=prompt, suffix=answer)`` builds it. The prefix attends
bidirectionally; ``token_type_ids`` (0 prefix, 1 suffix) are what keeps the answer out of the prefix's view
(PITFALLS 1): without them the config's ``use_bidirectional_attention`` lets every position see the answer.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize, resize_output_size
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family
from mmguard.core.constants import HALF_MEAN, HALF_STD

# PaliGemma checkpoints ship no chat template; this one renders what the processor builds from
# (images, text=question, suffix=answer): image tokens first, then <bos>, the prompt, "\n", the answer, <eos>.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% endif %}{% endfor %}<bos>"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}<eos>{% endif %}{% endfor %}"
)


@register_family("paligemma")
class PaliGemmaAdapter(LVLMAdapter):
    family = "paligemma"
    batched_preprocess = True  # resize, crop, rescale, normalize: all work on a stack

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 8, hidden: int = 64, layers: int = 2):
        tok = build_tiny_tokenizer(["<image>", "<unk>"], pad="<pad>", eos="<eos>", bos="<bos>",
                                   chat_template=CHAT_TEMPLATE)
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=image_size, patch_size=patch, vision_use_head=False)
        heads = 4
        # head_dim must be set: Gemma's default is 256 whatever the hidden size; MLP ratio 8 as in Gemma-2B
        text = GemmaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=8 * hidden,
                           num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=1,
                           head_dim=hidden // heads, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        config = PaliGemmaConfig(vision_config=vision, text_config=text,
                                 image_token_index=tok.convert_tokens_to_ids("<image>"), vocab_size=len(tok),
                                 projection_dim=hidden, hidden_size=hidden)
        config.pad_token_id, config.bos_token_id, config.eos_token_id = (tok.pad_token_id, tok.bos_token_id,
                                                                         tok.eos_token_id)
        model = PaliGemmaForConditionalGeneration(config)
        processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size},
                                            image_mean=list(HALF_MEAN), image_std=list(HALF_STD))
        processor.image_seq_length = (image_size // patch) ** 2  # PaliGemmaProcessor requires it
        return cls(model, tok, processor, name)

    def template_pieces(self) -> TemplatePieces:
        bos, eos = self.tokenizer.bos_token, self.tokenizer.eos_token
        return TemplatePieces(prefix="", between=bos, before_answer="\n", after_answer=eos)

    # --- image processing (SigLIP: plain resize to a fixed square, rescale, normalize; no crop)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        rh, rw = resize_output_size(ip.size, height, width) if ip.do_resize else (height, width)
        patch = self.model.config.vision_config.patch_size
        return {"resized": (rh, rw), "grid": (rh // patch, rw // patch)}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        x = x * ip.rescale_factor * 255.0 if ip.do_rescale else x * 255.0
        return {"pixel_values": normalize(x, ip.image_mean, ip.image_std) if ip.do_normalize else x}

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        gh, gw = layout["grid"]
        n = gh * gw
        return [self.image_token_id] * n, list(range(n))

    def patch_boxes(self, layout) -> torch.Tensor:
        # the whole image is stretched onto the grid, so each patch covers a plain grid cell of the raw image
        gh, gw = layout["grid"]
        ys = torch.arange(gh, dtype=torch.float32)
        xs = torch.arange(gw, dtype=torch.float32)
        return torch.stack([(ys / gh)[:, None].expand(gh, gw), (xs / gw)[None].expand(gh, gw),
                            ((ys + 1) / gh)[:, None].expand(gh, gw), ((xs + 1) / gw)[None].expand(gh, gw)],
                           -1).reshape(-1, 4)

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        # 0 for image + <bos> + prompt + "\n" (the bidirectional prefix), 1 for the answer (suffix) and beyond:
        # padding and, during generation, every new token are suffix tokens too.
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return {"token_type_ids": (pos >= answer_start.to(input_ids.device)[:, None]).long()}
