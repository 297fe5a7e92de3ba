"""EfficientNet-Lite as a transformers vision model, so that LLaVA's class builds it as its tower.

``LlavaModel`` makes its tower with ``AutoModel.from_config(config.vision_config)`` and reads
``hidden_states[vision_feature_layer]`` of shape (B, tokens, channels): this model returns the head's 1280-channel
map flattened row by row (one token per cell of the stride-32 grid). Registered with ``AutoConfig``/``AutoModel``
on import, a saved LLaVA folder with this tower round-trips through ``save_pretrained``/``from_pretrained``.

The architecture is the TensorFlow one that the ImageNet weights were trained in (EfficientNet-Lite: ReLU6, no
squeeze-excitation, stem and head not scaled, TensorFlow's "SAME" padding computed from the input size), with
module names that are the checkpoint's own less their leading underscore. Batch norm uses its running statistics
always: a tower that a victim switches to train mode must not start normalizing by batch statistics.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage of EfficientNet-B0/Lite0
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# (width, depth) multipliers of the Lite variants (efficientnet_lite_builder.py)
VARIANTS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2), "lite3": (1.2, 1.4), "lite4": (1.4, 1.8)}


class EfficientNetLiteConfig(PretrainedConfig):
    model_type = "mmguard_efficientnet_lite"

    def __init__(self, variant: str = "lite0", stem_channels: int = 32, head_channels: int = 1280,
                 batch_norm_eps: float = 1e-3, image_size: int = 224, **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(VARIANTS)}")
        self.variant = variant
        self.stem_channels = stem_channels
        self.head_channels = head_channels
        self.hidden_size = head_channels  # what LLaVA's projector reads
        self.batch_norm_eps = batch_norm_eps
        self.image_size = image_size
        self.patch_size = 32  # the output stride: one token per 32x32 pixels
        super().__init__(**kwargs)


def round_filters(channels: int, width: float) -> int:
    """TensorFlow's channel rounding to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return int(rounded + 8 if rounded < 0.9 * scaled else rounded)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for whatever input size it gets (extra pixel at the end)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.weight.shape[-2:], self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that normalizes with its running statistics in train mode too (and never updates them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, eps: float):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self.bn0 = FrozenStatsBatchNorm2d(mid, eps=eps)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn1 = FrozenStatsBatchNorm2d(mid, eps=eps)
        self.project_conv = SameConv2d(mid, cout, 1, bias=False)
        self.bn2 = FrozenStatsBatchNorm2d(cout, eps=eps)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.bn0(self.expand_conv(x))) if self.has_expand else x
        h = F.relu6(self.bn1(self.depthwise_conv(h)))
        h = self.bn2(self.project_conv(h))
        return h + x if self.residual else h


class EfficientNetLiteModel(PreTrainedModel):
    config_class = EfficientNetLiteConfig
    main_input_name = "pixel_values"
    base_model_prefix = "efficientnet_lite"
    _no_split_modules: List[str] = []
    # no attention inside: whatever implementation LLaVA asks its sub-models for is fine
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = True

    def __init__(self, config: EfficientNetLiteConfig):
        super().__init__(config)
        width, depth = VARIANTS[config.variant]
        eps = config.batch_norm_eps
        self.conv_stem = SameConv2d(3, config.stem_channels, 3, stride=2, bias=False)
        self.bn0 = FrozenStatsBatchNorm2d(config.stem_channels, eps=eps)
        blocks, last = [], len(STAGES) - 1
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            # Lite keeps the first and last stages' repeats and the stem's width fixed
            cin = config.stem_channels if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            n = repeats if i in (0, last) else int(math.ceil(depth * repeats))
            for j in range(n):
                blocks.append(MBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand, eps))
        self.blocks = nn.ModuleList(blocks)
        self.conv_head = SameConv2d(cout, config.head_channels, 1, bias=False)
        self.bn1 = FrozenStatsBatchNorm2d(config.head_channels, eps=eps)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' own init functions: they leave alone what from_pretrained has loaded (buffers included)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)

    def get_input_embeddings(self) -> nn.Module:
        return self.conv_stem

    def feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized pixels -> (B, head channels, ceil(H/32), ceil(W/32))."""
        x = F.relu6(self.bn0(self.conv_stem(pixel_values.to(self.conv_stem.weight.dtype))))
        for block in self.blocks:
            x = block(x)
        return F.relu6(self.bn1(self.conv_head(x)))

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: Optional[bool] = None,
                return_dict: Optional[bool] = None, **kwargs) -> BaseModelOutputWithPooling:
        tokens = self.feature_map(pixel_values).flatten(2).transpose(1, 2)  # (B, cells row by row, channels)
        hidden: Tuple[torch.Tensor, ...] = (tokens,)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1),
                                          hidden_states=hidden)


def checkpoint_state_dict(source: dict) -> dict:
    """The ImageNet checkpoint's entries under this model's names: leading underscores dropped, the classifier
    (``_fc``) and the batch-count buffers left out."""
    out = {}
    for key, value in source.items():
        if key.startswith("_fc.") or key.endswith("num_batches_tracked"):
            continue
        out[".".join(part.lstrip("_") for part in key.split("."))] = value
    return out


AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)
