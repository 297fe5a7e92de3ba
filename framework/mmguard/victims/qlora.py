"""QLoRA: LoRA over a 4-bit (NF4) quantized language model. Needs bitsandbytes and a CUDA GPU."""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from mmguard.core.registry import VICTIMS
from mmguard.victims.lora import LoRAVictim, mark_lora_trainable


class QLoRAUnavailable(RuntimeError):
    pass


def check_qlora_available() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QLoRAUnavailable("victim 'qlora' needs the bitsandbytes package (pip install bitsandbytes) and a "
                               "CUDA GPU; use 'lora' or 'dora' on this machine")
    if not torch.cuda.is_available():
        raise QLoRAUnavailable("victim 'qlora' needs a CUDA GPU (bitsandbytes 4-bit kernels); none is visible. "
                               "Use 'lora' or 'dora' here")


@VICTIMS.register("qlora")
class QLoRAVictim(LoRAVictim):
    def prepare(self, adapter):
        check_qlora_available()
        import bitsandbytes as bnb

        lm_ids = {id(m) for m in adapter.language_model.modules()}
        # swap each language-model Linear for a 4-bit NF4 Linear holding the same weights
        for name, module in list(adapter.model.named_modules()):
            for child_name, child in list(module.named_children()):
                if id(child) in lm_ids and isinstance(child, nn.Linear) and child_name in adapter.lora_targets:
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.bfloat16, quant_type="nf4")
                    q.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
                    if child.bias is not None:
                        q.bias = child.bias
                    setattr(module, child_name, q.to("cuda"))
        adapter.model.to("cuda")
        self.freeze(adapter.model)
        from peft import LoraConfig, inject_adapter_in_model

        targets = [n for n, m in adapter.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
        inject_adapter_in_model(LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                                           target_modules=targets), adapter.model)
        mark_lora_trainable(adapter.model)
        return self.trainable(adapter.model)
