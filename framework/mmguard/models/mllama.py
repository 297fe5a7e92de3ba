"""Mllama (MllamaForConditionalGeneration, Llama-3.2-Vision): tiled vision encoder, cross-attention into Llama.

The image never enters the self-attention sequence: the text holds one ``<|image|>`` token, and dedicated
cross-attention decoder layers attend to the vision states; ``cross_attention_mask`` says which text rows see
which tiles (every row from the ``<|image|>`` token on, real tiles only). So here X is that single token, its box
is the whole image, and the attention taps cover the self-attention layers only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaTextConfig, MllamaVisionConfig
from transformers.models.mllama.image_processing_pil_mllama import (MllamaImageProcessorPil,
                                                                    get_all_supported_aspect_ratios,
                                                                    get_image_size_fit_to_canvas,
                                                                    get_optimal_tiled_canvas)

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family
from mmguard.core.constants import CLIP_MEAN, CLIP_STD

IMAGE = "<|image|>"
# Llama-3.2-Vision-Instruct's template, cut down to what we render: bos, a system block only when there is no
# image (or a system message), then header / content / <|eot_id|> per message.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- set ns = namespace(has_images=false, system='') %}"
    "{%- for m in messages %}{%- if m['content'] is not string %}{%- for c in m['content'] %}"
    "{%- if c['type'] == 'image' %}{%- set ns.has_images = true %}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- endfor %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set ns.system = messages[0]['content'] if messages[0]['content']"
    " is string else messages[0]['content'][0]['text'] %}{%- set messages = messages[1:] %}{%- endif %}"
    "{%- if not ns.has_images or ns.system != '' %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n"
    "Today Date: 26 Jul 2024\\n\\n' + ns.system + '<|eot_id|>' }}{%- endif %}"
    "{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if m['content'] is string %}{{- m['content'] }}{%- else %}{%- for c in m['content'] %}"
    "{%- if c['type'] == 'image' %}{{- '<|image|>' }}{%- elif c['type'] == 'text' %}{{- c['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def dense_cross_attention_mask(token_mask: torch.Tensor, aspect_ratio_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) rows that see the image x (B, num_images, max_tiles) real tiles -> the processor's
    (B, L, num_images, max_tiles) ``cross_attention_mask``. One image per sample (every row from its token on)."""
    return token_mask[:, :, None, None].to(aspect_ratio_mask.dtype) * aspect_ratio_mask[:, None]


def _expand_cross_mask_hook(module, args, kwargs):
    """Lets callers (the shared ``generate``) pass the token-level (B, L) mask: expand it with the tile mask."""
    cam, arm = kwargs.get("cross_attention_mask"), kwargs.get("aspect_ratio_mask")
    if cam is not None and cam.dim() == 2 and arm is not None:
        kwargs["cross_attention_mask"] = dense_cross_attention_mask(cam, arm)
    return args, kwargs


@register_family("mllama")
class MllamaAdapter(LVLMAdapter):
    family = "mllama"

    def __init__(self, model, tokenizer, image_processor, name: str):
        super().__init__(model, tokenizer, image_processor, name)
        if not getattr(model, "_mmguard_cross_mask_hook", False):
            model.register_forward_pre_hook(_expand_cross_mask_hook, with_kwargs=True)
            model._mmguard_cross_mask_hook = True

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 8, hidden: int = 64, layers: int = 2,
             max_tiles: int = 2):
        # <|image|> last: as in the real checkpoint its id equals the text vocab_size (embed_tokens has
        # vocab_size + 8 rows, lm_head only vocab_size), so the LM can never emit it.
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>", IMAGE]
        tok = build_tiny_tokenizer(specials, pad="<|finetune_right_pad_id|>", eos="<|eot_id|>",
                                   bos="<|begin_of_text|>", chat_template=CHAT_TEMPLATE)
        image_id = tok.convert_tokens_to_ids(IMAGE)
        assert image_id == len(tok) - 1
        ratios = [list(r) for r in get_all_supported_aspect_ratios(max_tiles)]
        # intermediate_layers_indices: the real tower concatenates 5 intermediate layers to its output; one here
        vision = MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                    attention_heads=2, image_size=image_size, patch_size=patch,
                                    max_num_tiles=max_tiles, supported_aspect_ratios=ratios,
                                    intermediate_layers_indices=[0], vision_output_dim=32 * 2)
        # `layers` self-attention layers; a cross-attention layer after the first, then after every 4 more
        # (the real 40-layer model has them at 3, 8, 13, ...): tiny = S X S, wide = S X S S
        cross = [1 + 5 * i for i in range(1 + max(layers - 1, 0) // 4)]
        text = MllamaTextConfig(vocab_size=image_id, hidden_size=hidden, intermediate_size=2 * hidden,
                                num_hidden_layers=layers + len(cross), num_attention_heads=4, num_key_value_heads=2,
                                cross_attention_layers=cross, max_position_embeddings=512,
                                bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id,
                                eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id],
                                tie_word_embeddings=False)
        model = MllamaForConditionalGeneration(MllamaConfig(vision_config=vision, text_config=text,
                                                            image_token_index=image_id))
        # Gates start at 0 (tanh(0) = 0): the image would not reach the text at all and the pixel gradient would
        # be exactly zero (cf. PITFALLS 4). A trained checkpoint has them open; open them here too.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                    p.fill_(1.0)
                elif n.endswith("gate") and "vision_model" in n:  # tile / tile-position embeddings
                    p.fill_(0.3)
        processor = MllamaImageProcessorPil(size={"height": image_size, "width": image_size},
                                            max_image_tiles=max_tiles, image_mean=list(CLIP_MEAN),
                                            image_std=list(CLIP_STD))
        return cls(model, tok, processor, name)

    def template_pieces(self) -> TemplatePieces:
        return TemplatePieces(prefix="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n", between="",
                              before_answer="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
                              after_answer="<|eot_id|>")

    # --- image processing (MllamaImageProcessor: fit to the best tile canvas, pad, rescale, normalize, split)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        tile = ip.size["height"]
        canvas_h, canvas_w = (int(v) for v in get_optimal_tiled_canvas(height, width, ip.max_image_tiles, tile))
        new_h, new_w = get_image_size_fit_to_canvas(height, width, canvas_h, canvas_w, tile)
        tiles = (canvas_h // tile, canvas_w // tile)
        # the real processor looks the (tiles_h, tiles_w) pair up in a (width, height) list; reproduced as is
        ratio_id = get_all_supported_aspect_ratios(ip.max_image_tiles).index(tiles) + 1
        return {"resized": (int(new_h), int(new_w)), "canvas": (canvas_h, canvas_w), "tiles": tiles, "tile": tile,
                "aspect_ratio_id": ratio_id, "max_tiles": ip.max_image_tiles}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        x = pil_resize(pixels, *layout["resized"], ip.resample)
        (ch, cw), (th, tw), t = layout["canvas"], layout["tiles"], layout["tile"]
        x = F.pad(x, (0, cw - x.shape[-1], 0, ch - x.shape[-2]))  # zero pad bottom/right *before* normalizing
        if ip.do_rescale:
            x = x * (ip.rescale_factor * 255.0)
        if ip.do_normalize:
            x = normalize(x, ip.image_mean, ip.image_std)
        tiles = x.reshape(3, th, t, tw, t).permute(1, 3, 0, 2, 4).reshape(th * tw, 3, t, t)  # row-major tiles
        n, m = th * tw, layout["max_tiles"]
        tiles = F.pad(tiles, (0, 0, 0, 0, 0, 0, 0, m - n))  # empty tile slots are 0 after normalization
        mask = torch.zeros(1, m, dtype=torch.long)
        mask[0, :n] = 1
        return {"pixel_values": tiles[None], "aspect_ratio_ids": torch.tensor([layout["aspect_ratio_id"]]),
                "aspect_ratio_mask": mask}

    def real_process(self, images) -> Dict[str, torch.Tensor]:
        out = dict(self.image_processor(images=[[im] for im in images], return_tensors="pt"))  # one image/sample
        out.pop("num_tiles", None)
        return out

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        return [self.image_token_id], [0]

    def patch_boxes(self, layout) -> torch.Tensor:
        return torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # the one <|image|> token stands for the whole image

    # --- cross-attention mask: token rows from here, tiles from the pixel inputs
    def extra_token_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           answer_start: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(B, L) token-level mask: 1 from the first <|image|> to the end (padding included, as the real
        processor does); expanded to (B, L, 1, max_tiles) with the tile mask in ``collate`` or, for tokens collated
        apart from their pixels, by the model's pre-hook."""
        is_image = (input_ids == self.image_token_id).long()
        return {"cross_attention_mask": (is_image.cumsum(1) > 0).long()}

    def collate(self, encoded, images, padding_side: str = "right") -> Dict[str, torch.Tensor]:
        """Dense (B, L, 1, max_tiles) mask here: generation slices and extends it step by step."""
        batch = super().collate(encoded, images, padding_side)
        batch["cross_attention_mask"] = dense_cross_attention_mask(batch["cross_attention_mask"],
                                                                   batch["aspect_ratio_mask"])
        return batch

    # --- attention: self-attention layers only (cross-attention layers attend to vision states, not tokens)
    @property
    def attention_modules(self) -> List[torch.nn.Module]:
        return [layer.self_attn for layer in self.language_model.layers if hasattr(layer, "self_attn")]

    def eager_attentions(self, batch: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Eager weights of the self-attention modules, caught by hooks: ``output_attentions`` would interleave
        the cross-attention layers' (rows x vision states) weights."""
        caught: Dict[int, torch.Tensor] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: caught.__setitem__(i, out[1]))
                 for i, m in enumerate(self.attention_modules)]
        self.model.set_attn_implementation("eager")
        try:
            with torch.no_grad():
                self.model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
            self.model.set_attn_implementation("sdpa")
            self.enable_attention_tap()
        return [caught[i] for i in range(len(hooks))]
