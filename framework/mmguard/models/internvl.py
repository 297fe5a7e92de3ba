"""InternVL (InternVLForConditionalGeneration): InternViT, pixel-shuffle MLP projector, Qwen2 text model.

The image processor is GotOcr2's: under the InternVLProcessor (which turns ``crop_to_patches`` on) an image is
resized onto the tile grid whose aspect ratio is closest to its own, cut into tiles row by row, and, if there
is more than one tile, a thumbnail of the whole image is appended. Every tile becomes
``(image_size / patch)^2 * downsample_ratio^2`` context tokens, all between one ``<img>`` and one ``</img>``.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

import torch
from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil, \
    get_optimal_tiled_canvas
from transformers.models.internvl.processing_internvl import InternVLProcessor

from mmguard.models.base import LVLMAdapter, TemplatePieces
from mmguard.models.processing import normalize, pil_resize, resize_output_size
from mmguard.models.tokenizer import build_tiny_tokenizer
from mmguard.models.zoo import register_family

START, END, CONTEXT, VIDEO = "<img>", "</img>", "<IMG_CONTEXT>", "<video>"
# The chat template of the InternVL *-hf checkpoints (ChatML; an image item renders as "<IMG_CONTEXT>\n").
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


@register_family("internvl")
class InternVLAdapter(LVLMAdapter):
    family = "internvl"

    @classmethod
    def tiny(cls, name: str, image_size: int = 32, patch: int = 4, hidden: int = 64, layers: int = 2,
             max_patches: int = 12):
        tok = build_tiny_tokenizer(["<|im_start|>", "<|im_end|>", START, END, CONTEXT, VIDEO],
                                   pad="<|endoftext|>", eos="<|im_end|>", chat_template=CHAT_TEMPLATE,
                                   extra=(("start_image_token", START), ("end_image_token", END),
                                          ("context_image_token", CONTEXT), ("video_token", VIDEO)))
        ids = tok.convert_tokens_to_ids
        for key, token in (("start_image", START), ("end_image", END), ("context_image", CONTEXT),
                           ("video", VIDEO)):  # what InternVLProcessor reads
            setattr(tok, f"{key}_token_id", ids(token))
        vision = InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, image_size=image_size, patch_size=patch)
        # Qwen2 ids default to 151643/151645 (PITFALLS 5): take them from the tiny tokenizer (Qwen's bos is
        # <|endoftext|>)
        text = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                           num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                           bos_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                           tie_word_embeddings=True)
        grid = image_size // patch
        config = InternVLConfig(vision_config=vision, text_config=text, image_token_id=ids(CONTEXT),
                                image_seq_length=int(grid * grid * 0.25), downsample_ratio=0.5,
                                vision_feature_layer=-1, vision_feature_select_strategy="default")
        model = InternVLForConditionalGeneration(config)
        # InternViT initializes its position embeddings to zero: a random tower would not know where a
        # patch is.
        with torch.no_grad():
            model.model.vision_tower.embeddings.position_embeddings.normal_(std=vision.initializer_range)
        # the real preprocessor config leaves crop_to_patches off; the InternVLProcessor turns it on per call
        processor = GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, min_patches=1,
                                             max_patches=max_patches, crop_to_patches=False)
        return cls(model, tok, processor, name)

    def template_pieces(self) -> TemplatePieces:
        return TemplatePieces(prefix="<|im_start|>user\n", between="\n",
                              before_answer="<|im_end|>\n<|im_start|>assistant\n",
                              after_answer="<|im_end|>\n")

    def _ids(self) -> Tuple[int, int, int]:
        tok = self.tokenizer
        start = getattr(tok, "start_image_token_id", None) or tok.convert_tokens_to_ids(START)
        end = getattr(tok, "end_image_token_id", None) or tok.convert_tokens_to_ids(END)
        return start, end, self.model.config.image_token_id

    def collapse_image_tokens(self, text: str) -> str:
        start, end, ctx = self.tokenizer.convert_ids_to_tokens(list(self._ids()))
        return re.sub(f"{re.escape(start)}(?:{re.escape(ctx)})+{re.escape(end)}", lambda _: ctx, text)

    # --- image processing
    def _processor_kwargs(self) -> Dict[str, Any]:
        """What InternVLProcessor passes to its image processor on every call (crop_to_patches=True)."""
        return dict(InternVLProcessor.images_kwargs)

    def _tokens_per_tile(self) -> Tuple[int, int]:
        cfg = self.model.config
        size, patch = cfg.vision_config.image_size, cfg.vision_config.patch_size
        gh = int(size[0] // patch[0] * cfg.downsample_ratio)
        gw = int(size[1] // patch[1] * cfg.downsample_ratio)
        return gh, gw

    def layout(self, height: int, width: int) -> Dict[str, Any]:
        ip = self.image_processor
        kw = {"crop_to_patches": ip.crop_to_patches, "min_patches": ip.min_patches,
              "max_patches": ip.max_patches, **self._processor_kwargs()}
        if kw["crop_to_patches"] and kw["max_patches"] > 1:  # crop_image_to_patches: always resized to the canvas
            th, tw = ip.size["height"], ip.size["width"]
            cols, rows = get_optimal_tiled_canvas((height, width), (th, tw), kw["min_patches"],
                                                  kw["max_patches"])
            thumbnail = cols * rows != 1
        else:  # one tile: the whole image, resized as PilBackend.resize does when do_resize
            th, tw = resize_output_size(ip.size, height, width) if ip.do_resize else (height, width)
            cols, rows, thumbnail = 1, 1, False
        return {"tile": (th, tw), "tiles": (rows, cols), "thumbnail": thumbnail,
                "grid": self._tokens_per_tile()}

    def preprocess(self, pixels: torch.Tensor, layout: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        ip = self.image_processor
        (th, tw), (rows, cols) = layout["tile"], layout["tiles"]
        x = pil_resize(pixels, rows * th, cols * tw, ip.resample)
        tiles = [x[:, r * th:(r + 1) * th, c * tw:(c + 1) * tw] for r in range(rows) for c in range(cols)]
        if layout["thumbnail"]:  # resized from the original image, not from the canvas
            tiles.append(pil_resize(pixels, th, tw, ip.resample))
        x = torch.stack(tiles)
        x = x * (ip.rescale_factor * 255.0) if ip.do_rescale else x * 255.0
        if ip.do_normalize:
            x = normalize(x, ip.image_mean, ip.image_std)
        return {"pixel_values": x}

    def batch_pixel_inputs(self, per_image: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        # the model takes every tile of every image in one flat batch, in image order
        return {"pixel_values": torch.cat([d["pixel_values"] for d in per_image])}

    def real_process(self, images) -> Dict[str, torch.Tensor]:
        return dict(self.image_processor(images=images, return_tensors="pt", **self._processor_kwargs()))

    def _num_tiles(self, layout) -> int:
        rows, cols = layout["tiles"]
        return rows * cols + int(layout["thumbnail"])

    def image_token_ids(self, layout) -> Tuple[List[int], List[int]]:
        start, end, ctx = self._ids()
        gh, gw = layout["grid"]
        n = gh * gw * self._num_tiles(layout)
        return [start] + [ctx] * n + [end], list(range(1, n + 1))

    def patch_boxes(self, layout) -> torch.Tensor:
        """Each tile covers a cell of the raw image (the resize maps the image onto the tile canvas), the
        thumbnail covers all of it; within a tile, the pixel shuffle leaves tokens row-major on a (gh, gw)
        grid, each token a 2x2 block of patches."""
        (rows, cols), (gh, gw) = layout["tiles"], layout["grid"]
        cells = [(r / rows, c / cols, 1 / rows, 1 / cols) for r in range(rows) for c in range(cols)]
        if layout["thumbnail"]:
            cells.append((0.0, 0.0, 1.0, 1.0))
        ys, xs = torch.arange(gh, dtype=torch.float32), torch.arange(gw, dtype=torch.float32)
        boxes = []
        for top, left, h, w in cells:
            y0, y1 = top + ys / gh * h, top + (ys + 1) / gh * h
            x0, x1 = left + xs / gw * w, left + (xs + 1) / gw * w
            grid = [y0[:, None].expand(gh, gw), x0[None].expand(gh, gw), y1[:, None].expand(gh, gw),
                    x1[None].expand(gh, gw)]
            boxes.append(torch.stack(grid, -1).reshape(-1, 4))
        return torch.cat(boxes).clamp(0, 1)
