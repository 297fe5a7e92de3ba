"""Idefics3 (Idefics3ForConditionalGeneration): SigLIP-style vision tower, pixel-shuffle connector, Llama LM.

The processor resizes the longest edge, rounds the image up to whole tiles of ``max_image_size``, and when
that is more than one tile sends every tile plus a downsized global image; each frame becomes
(side / patch / scale_factor)^2 tokens. Its resizes are PIL LANCZOS on 8-bit images (``processing.pil_resize``).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Tuple

import torch
from transformers import Idefics3Config, Idefics3ForConditionalGeneration, LlamaConfig
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
from transformers.models.idefics3.image_processing_pil_idefics3 import (
    MAX_IMAGE_SIZE, Idefics3ImageProcessorPil, _resize_output_size_rescale_to_max_len,
    _resize_output_size_scale_below_upper_bound)

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family

FAKE, IMAGE, GLOBAL = "<fake_token_around_image>", "<image>", "<global-img>"
# HuggingFaceM4/Idefics3-8B-Llama3's template: "User:" with no space before an image, "Assistant: " before text
CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# the processor's expansion of one <image>, tiled or not (Idefics3Processor.replace_image_token)
_EXPANDED = re.compile(rf"(?:(?:{FAKE}<row_\d+_col_\d+>(?:{IMAGE})+)+\n)*\n?{FAKE}{GLOBAL}(?:{IMAGE})+{FAKE}")


def _edge(size, key: str = "longest_edge"):
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


@register_family("idefics3")
class Idefics3Adapter(LVLMAdapter):
    family = "idefics3"
    projector_names = ("model.connector",)

    @classmethod
    def tiny(cls, name: str, hidden: int = 64, layers: int = 2, image_size: int = 32, patch: int = 4,
             tile: int = 0):
        """``image_size``: the processor's longest edge; ``tile``: its max_image_size (= vision image size),
        ``image_size`` by default so a 32x32 image is one frame of (32/4/2)^2 = 16 tokens, no resize.
        ``tile=16`` gives the real layout in small: 2x2 tiles plus a global image."""
        tile = tile or image_size
        rows_cols = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
        tok = build_tiny_tokenizer([FAKE, IMAGE, GLOBAL, *rows_cols], pad="<|reserved_special_token_0|>",
                                   eos="<end_of_utterance>", bos="<|begin_of_text|>", chat_template=CHAT_TEMPLATE)
        vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=tile, patch_size=patch)
        text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=1024, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
        config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                                image_token_id=tok.convert_tokens_to_ids(IMAGE), pad_token_id=tok.pad_token_id,
                                tie_word_embeddings=False)
        model = Idefics3ForConditionalGeneration(config)
        processor = Idefics3ImageProcessorPil(size={"longest_edge": image_size}, max_image_size={"longest_edge": tile},
                                              do_image_splitting=True)
        return cls(model, tok, processor, name)

    def __init__(self, model, tokenizer, image_processor, name: str):
        self._image_ids: Dict[Tuple[int, int], Tuple[List[int], List[int]]] = {}
        super().__init__(model, tokenizer, image_processor, name)

    def template_pieces(self) -> TemplatePieces:
        return TemplatePieces(prefix="<|begin_of_text|>User:", between="", answer_prefix=" ",
                              before_answer="<end_of_utterance>\nAssistant:", after_answer="<end_of_utterance>\n")

    @property
    def language_model(self) -> torch.nn.Module:
        return self.model.model.text_model

    # --- image processing (Idefics3ImageProcessorPil._preprocess, one image)
    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        tile = _edge(ip.max_image_size)
        h, w = height, width
        if ip.do_resize:
            if _edge(ip.size):  # the longest edge goes to size (up or down), then under the 4k cap
                h, w = _resize_output_size_rescale_to_max_len(h, w, max_len=_edge(ip.size))
                h, w = _resize_output_size_scale_below_upper_bound(h, w, max_len=MAX_IMAGE_SIZE)
            else:
                h, w = _edge(ip.size, "height"), _edge(ip.size, "width")
        rows = cols = 0
        if ip.do_image_splitting:  # resize_for_vision_encoder: round up to whole tiles, same float steps
            aspect = w / h
            if w >= h:
                ew = math.ceil(w / tile) * tile
                eh = math.ceil(int(ew / aspect) / tile) * tile
            else:
                eh = math.ceil(h / tile) * tile
                ew = math.ceil(int(eh * aspect) / tile) * tile
            if eh > tile or ew > tile:  # split_images
                rows, cols = (eh - tile) // tile + 1, (ew - tile) // tile + 1
        else:
            eh = ew = tile
        return {"resized": (h, w), "encoder": (eh, ew), "rows": rows, "cols": cols, "tile": tile}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        tile, rows, cols = layout["tile"], layout["rows"], layout["cols"]
        x = pil_resize(pixels, *layout["resized"], ip.resample) if ip.do_resize else pixels
        x = pil_resize(x, *layout["encoder"], ip.resample)
        frames = [x[:, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows) for c in range(cols)]
        frames.append(pil_resize(x, tile, tile, ip.resample))  # the global image (x itself when not split)
        v = torch.stack(frames) * 255.0
        if ip.do_rescale:
            v = v * ip.rescale_factor
        if ip.do_normalize:
            v = normalize(v, ip.image_mean, ip.image_std)
        out = {"pixel_values": v}
        if ip.do_pad:  # every frame is tile x tile: the mask is all ones (padding frames get zeros in the batch)
            out["pixel_attention_mask"] = torch.ones(v.shape[0], tile, tile, dtype=torch.long, device=v.device)
        return out

    def batch_pixel_inputs(self, per_image: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Pad the frame count with all-zero frames, as the processor does; the model drops all-zero frames."""
        n = max(d["pixel_values"].shape[0] for d in per_image)
        out = {}
        for key in per_image[0]:
            out[key] = torch.stack([torch.cat([d[key], d[key].new_zeros(n - d[key].shape[0], *d[key].shape[1:])])
                                    for d in per_image])
        return out

    # --- tokens
    @property
    def tokens_per_frame(self) -> int:
        v = self.model.config.vision_config
        return int(((v.image_size // v.patch_size) ** 2) / (self.model.config.scale_factor ** 2))

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        """Tokenize the processor's expansion (rows end with "\\n", the global image follows "\\n")."""
        key = (layout["rows"], layout["cols"])
        if key not in self._image_ids:
            n = self.tokens_per_frame
            text = ""
            if key != (0, 0):
                for r in range(key[0]):
                    text += "".join(f"{FAKE}<row_{r + 1}_col_{c + 1}>" + IMAGE * n for c in range(key[1])) + "\n"
                text += "\n"
            text += FAKE + GLOBAL + IMAGE * n + FAKE
            ids = self._tok(text)
            self._image_ids[key] = (ids, [i for i, t in enumerate(ids) if t == self.image_token_id])
        ids, index = self._image_ids[key]
        return list(ids), list(index)

    def patch_boxes(self, layout) -> torch.Tensor:
        """Tiles row-major then the global image; in each frame the pixel shuffle groups scale x scale patch
        blocks row-major, so token k covers cell (k // g, k % g) of a g x g grid of the frame."""
        g = math.isqrt(self.tokens_per_frame)
        cells = torch.arange(g, dtype=torch.float64)
        lo, hi = cells / g, (cells + 1) / g
        frames = [(r / layout["rows"], c / layout["cols"], 1 / layout["rows"], 1 / layout["cols"])
                  for r in range(layout["rows"]) for c in range(layout["cols"])] + [(0.0, 0.0, 1.0, 1.0)]
        boxes = []
        for y, x, fh, fw in frames:
            y0, y1, x0, x1 = y + lo * fh, y + hi * fh, x + lo * fw, x + hi * fw
            boxes.append(torch.stack([y0[:, None].expand(g, g), x0[None].expand(g, g),
                                      y1[:, None].expand(g, g), x1[None].expand(g, g)], -1).reshape(-1, 4))
        return torch.cat(boxes).float().clamp(0, 1)

    def collapse_image_tokens(self, text: str) -> str:
        """The whole expansion (markers, tile tags, newlines, image tokens) folds back into one <image>."""
        return _EXPANDED.sub(IMAGE, text)
