"""Gemma 3 (Gemma3ForConditionalGeneration): SigLIP tower, average-pooled soft tokens, Gemma 3 text model.

Three things differ from LLaVA. The processor expands ``<start_of_image>`` into
``"\\n\\n<start_of_image>" + <image_soft_token> * mm_tokens_per_image + "<end_of_image>\\n\\n"``.
The text model attends bidirectionally among the soft tokens of one image, which it learns from
``token_type_ids`` (1 on soft tokens, as the processor's ``mm_token_type_ids``), and mixes sliding-window
and full-attention layers. And the projector's weight is zero-initialized, which silently zeroes the pixel
gradient of a random model (PITFALLS 4).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import torch
from transformers import masking_utils
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize, resize_output_size
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
# The real template (bos, user/model turns, text trimmed, "<start_of_image>" where the image goes), reduced to
# what a [image, text] user turn and a text assistant turn need.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@register_family("gemma3")
class Gemma3Adapter(LVLMAdapter):
    family = "gemma3"
    batched_preprocess = True  # resize, crop, rescale, normalize: all work on a stack

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 4, tokens_per_image: int = 16,
             hidden: int = 64, layers: int = 2, sliding_window: int = 512):
        tok = build_tiny_tokenizer(["<start_of_turn>", "<end_of_turn>", BOI, EOI, SOFT], pad="<pad>",
                                   eos="<eos>", bos="<bos>", chat_template=CHAT_TEMPLATE,
                                   extra=(("boi_token", BOI), ("eoi_token", EOI), ("image_token", SOFT)))
        ids = tok.convert_tokens_to_ids
        for key, token in (("boi", BOI), ("eoi", EOI), ("image", SOFT)):  # what Gemma3Processor reads
            setattr(tok, f"{key}_token_id", ids(token))
        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, image_size=image_size, patch_size=patch,
                                    vision_use_head=False)
        # Like the real models: local (sliding) layers with one global layer last; head_dim and the query
        # scalar chosen for the tiny width. The window exceeds our short sequences, as 1024 does real prompts.
        text = Gemma3TextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                head_dim=16, query_pre_attn_scalar=16, sliding_window=sliding_window,
                                layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
                                max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id,
                                eos_token_id=[tok.eos_token_id, ids("<end_of_turn>")])
        # mm_tokens_per_image must be a square whose side divides the patch grid: the projector
        # average-pools the (image_size / patch)^2 patch grid down to it
        side = int(round(tokens_per_image ** 0.5))
        assert side * side == tokens_per_image and (image_size // patch) % side == 0, "pooling must tile"
        config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=tokens_per_image,
                              boi_token_index=ids(BOI), eoi_token_index=ids(EOI), image_token_index=ids(SOFT),
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id)
        model = Gemma3ForConditionalGeneration(config)
        # The projector weight starts at zero: image features would be 0 and the pixel gradient with them
        # (PITFALLS 4). A trained checkpoint has a real projection; give the random one a small random one.
        with torch.no_grad():
            model.model.multi_modal_projector.mm_input_projection_weight.normal_(std=config.initializer_range)
        processor = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
        return cls(model, tok, processor, name)

    # --- template: the image placeholder's "\n\n" before it joins "user\n" (one "\n\n\n" token for the real
    # tokenizer, as the processor tokenizes the expanded text); the "\n\n" after it leads the question
    def template_pieces(self) -> TemplatePieces:
        bos = self.tokenizer.bos_token or ""
        return TemplatePieces(prefix=f"{bos}<start_of_turn>user\n\n\n", between="\n\n",
                              before_answer="<end_of_turn>\n<start_of_turn>model\n",
                              after_answer="<end_of_turn>\n")

    def collapse_image_tokens(self, text: str) -> str:
        conv = self.tokenizer.convert_ids_to_tokens
        cfg = self.model.config
        boi, eoi, soft = conv(cfg.boi_token_index), conv(cfg.eoi_token_index), conv(cfg.image_token_index)
        pattern = f"\n\n{re.escape(boi)}(?:{re.escape(soft)})+{re.escape(eoi)}\n\n"
        return re.sub(pattern, lambda _: boi, text)

    # --- image processing (Gemma3ImageProcessor: plain resize to size, rescale, normalize; the
    # Gemma3Processor turns pan-and-scan off unless asked)
    def _processor_kwargs(self) -> Dict[str, Any]:
        return {"do_pan_and_scan": Gemma3Processor.images_kwargs.get("do_pan_and_scan", False)}

    def layout(self, height: int, width: int) -> Dict[str, Any]:
        if self._processor_kwargs()["do_pan_and_scan"]:
            raise NotImplementedError("Gemma 3 pan-and-scan crops are not supported")
        ip = self.image_processor
        out = resize_output_size(ip.size, height, width) if ip.do_resize else (height, width)
        side = int(round(self.model.config.mm_tokens_per_image ** 0.5))
        return {"resized": out, "grid": (side, side)}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        x = x * (ip.rescale_factor * 255.0) if ip.do_rescale else x * 255.0
        if ip.do_normalize:
            x = normalize(x, ip.image_mean, ip.image_std)
        return {"pixel_values": x}

    def real_process(self, images) -> Dict[str, torch.Tensor]:
        return dict(self.image_processor(images=images, return_tensors="pt", **self._processor_kwargs()))

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        cfg = self.model.config
        gh, gw = layout["grid"]
        n = gh * gw
        ids = [cfg.boi_token_index] + [cfg.image_token_index] * n + [cfg.eoi_token_index]
        return ids, list(range(1, n + 1))

    def patch_boxes(self, layout) -> torch.Tensor:
        # the resize maps the whole image onto the square, and each pooled token averages a square block of it
        gh, gw = layout["grid"]
        ys, xs = torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32)
        y0, x0 = (ys / gh)[:, None].expand(gh, gw), (xs / gw)[None].expand(gh, gw)
        y1, x1 = ((ys + 1) / gh)[:, None].expand(gh, gw), ((xs + 1) / gw)[None].expand(gh, gw)
        return torch.stack([y0, x0, y1, x1], -1).reshape(-1, 4)

    def model_inputs(self, batch: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        """Full-sequence passes get their attention masks here, built as transformers builds them (causal, OR
        bidirectional within an image's soft tokens, AND the sliding window on sliding layers, AND padding) but
        by broadcasting: transformers vmaps any mask with such overlays, which costs a quarter of a small model's
        training step on CPU. tests/models/test_gemma3.py checks them against transformers' own."""
        kwargs = super().model_inputs(batch)
        text = self.model.config.get_text_config()
        if (masking_utils.ALL_MASK_ATTENTION_FUNCTIONS.get(text._attn_implementation) is not masking_utils.sdpa_mask
                or kwargs.get("token_type_ids") is None or kwargs.get("attention_mask") is None):
            return kwargs
        kwargs["attention_mask"] = attention_masks(kwargs["attention_mask"], kwargs["token_type_ids"],
                                                   text.sliding_window)
        return kwargs

    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        # 1 on soft tokens only (the processor's mm_token_type_ids): they see each other, the rest is causal
        return {"token_type_ids": (input_ids == self.model.config.image_token_index).long()}


def attention_masks(attention_mask: torch.Tensor, token_type_ids: torch.Tensor, sliding_window: int
                    ) -> Dict[str, torch.Tensor]:
    """Gemma 3's two (B, 1, L, L) boolean masks of a full sequence, from transformers' own mask functions."""
    from transformers.models.gemma3.modeling_gemma3 import get_block_sequence_ids_for_mask

    batch, length = attention_mask.shape
    blocks = get_block_sequence_ids_for_mask(token_type_ids, device=attention_mask.device)
    full = masking_utils.or_masks(masking_utils.causal_mask_function, masking_utils.blockwise_overlay(blocks))
    sliding = masking_utils.and_masks(full, masking_utils.sliding_window_overlay(sliding_window))
    build = dict(batch_size=batch, q_length=length, kv_length=length, attention_mask=attention_mask.bool(),
                 allow_is_causal_skip=False, use_vmap=False, device=attention_mask.device)
    return {"full_attention": masking_utils.sdpa_mask(mask_function=full, **build),
            "sliding_attention": masking_utils.sdpa_mask(mask_function=sliding, **build)}
