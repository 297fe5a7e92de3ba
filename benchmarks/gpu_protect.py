"""The protection loop's PGD step at real sizes: random-init Qwen2.5-VL architectures sized like the 3B and the 7B
checkpoints, bf16, 448x448 images, batch 8 (no weights can be downloaded: the architecture is what costs time).

One PGD step is what ``ProtectionModule.pgd`` does per step: process the raw images (differentiable, PIL-exact),
the surrogate's forward pass with the attention tap on the first layer, mmguard_bph's l_joint, the gradient to
the raw pixels and the projected sign step. Reports step time, peak GPU memory, images per second and an MFU
estimate (FLOPs of one step counted by torch's FlopCounterMode, over the GPU's bf16 dense peak). Writes JSON
beside this script. Prepared and checked on CPU at ``--size tiny``; the real sizes need a GPU.

    python benchmarks/gpu_protect.py --size tiny --device cpu --steps 1     # a smoke run
    python benchmarks/gpu_protect.py --size 3b 7b                            # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# Qwen2.5-VL's published dimensions (config.json of Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct)
SIZES = {
    "tiny": dict(hidden=64, inter=128, layers=2, heads=4, kv=2, vocab=None, vdepth=2, vhidden=32, vinter=64,
                 vheads=2, full=[1], patch=4, image=32, tie=False),
    "3b": dict(hidden=2048, inter=11008, layers=36, heads=16, kv=2, vocab=151936, vdepth=32, vhidden=1280,
               vinter=3420, vheads=16, full=[7, 15, 23, 31], patch=14, image=448, tie=True),
    "7b": dict(hidden=3584, inter=18944, layers=28, heads=28, kv=4, vocab=152064, vdepth=32, vhidden=1280,
               vinter=3420, vheads=16, full=[7, 15, 23, 31], patch=14, image=448, tie=False),
}
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}  # dense bf16 FLOP/s of the data sheets


def build(size: str, device: str, dtype: torch.dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig, Qwen2_5_VLVisionConfig

    from mmguard.core.constants import CLIP_MEAN, CLIP_STD
    from mmguard.models.qwen2_5_vl import (CHAT_TEMPLATE, Qwen2_5_VLAdapter, mrope_section, tiny_qwen_image_processor,
                                           tiny_qwen_tokenizer)

    s = SIZES[size]
    tok = tiny_qwen_tokenizer(CHAT_TEMPLATE)  # a small vocabulary's ids are valid in the real-size embedding
    ids = tok.convert_tokens_to_ids
    merge = 2
    vision = Qwen2_5_VLVisionConfig(depth=s["vdepth"], hidden_size=s["vhidden"], intermediate_size=s["vinter"],
                                    num_heads=s["vheads"], patch_size=s["patch"], spatial_merge_size=merge,
                                    temporal_patch_size=2, out_hidden_size=s["hidden"],
                                    window_size=8 * s["patch"] * merge if size != "tiny" else 4 * s["patch"] * merge,
                                    fullatt_block_indexes=s["full"])
    text = Qwen2_5_VLTextConfig(vocab_size=s["vocab"] or len(tok), hidden_size=s["hidden"],
                                intermediate_size=s["inter"], num_hidden_layers=s["layers"],
                                num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
                                max_position_embeddings=32768, max_window_layers=s["layers"],
                                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                 "mrope_section": mrope_section(s["hidden"] // s["heads"])},
                                bos_token_id=ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id)
    config = Qwen2_5_VLConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                              image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                              vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                              tie_word_embeddings=s["tie"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(dtype)
    model.requires_grad_(False)
    model.eval()
    processor = tiny_qwen_image_processor(s["patch"], merge, CLIP_MEAN, CLIP_STD)
    processor.max_pixels = s["image"] * s["image"]
    return Qwen2_5_VLAdapter(model, tok, processor, f"qwen2_5_vl-{size}-random-init")


def pgd_step(adapter, attack, view, clean, deltas, budget, alpha):
    deltas = [d.detach().requires_grad_(True) for d in deltas]
    images = [(x + d).clamp(0, 1) for x, d in zip(clean, deltas)]
    loss = attack.loss(view.with_images(images, deltas)).mean()
    grads = torch.autograd.grad(loss, deltas)
    return [budget.project(x, d.detach() - alpha * g.sign()) for x, d, g in zip(clean, deltas, grads)]


def measure(size: str, device: str, batch: int, steps: int) -> dict:
    from mmguard.attacks.view import CleanPass, SurrogateView
    from mmguard.data.synthetic import generate
    from mmguard.engine.build import build_attack
    from mmguard.engine.store import Budget

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    adapter = build(size, device, dtype)
    s = SIZES[size]
    samples = generate(batch, seed=0, types=("colour",), size=s["image"])
    attack = build_attack("mmguard_bph")
    triggers = [" meadow anchor pebble"] * batch
    clean = [x.pixels().to(device) for x in samples]
    view = SurrogateView(adapter, samples, triggers, attack.tapped_layers,
                         CleanPass(adapter, samples, clean, attack.tapped_layers))
    budget = Budget(8 / 255, 33.0)
    deltas = [torch.zeros_like(x) for x in clean]
    deltas = pgd_step(adapter, attack, view, clean, deltas, budget, 1 / 255)  # warm-up
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        pgd_step(adapter, attack, view, clean, deltas, budget, 1 / 255)
    flops = counter.get_total_flops()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        deltas = pgd_step(adapter, attack, view, clean, deltas, budget, 1 / 255)
    if device == "cuda":
        torch.cuda.synchronize()
    step = (time.perf_counter() - t0) / steps
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    params = sum(p.numel() for p in adapter.model.parameters())
    return {"size": size, "parameters": params, "batch": batch, "image": s["image"], "dtype": str(dtype),
            "sequence": int(view.tokens["input_ids"].shape[1]), "step_s": round(step, 4),
            "images_per_s": round(batch / step, 2), "step_tflop": round(flops / 1e12, 3),
            "achieved_tflop_s": round(flops / step / 1e12, 2), "mfu": round(flops / step / peak, 4) if peak else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
            "gpu": gpu}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", nargs="*", default=["3b", "7b"], choices=sorted(SIZES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=str(HERE / "gpu_protect.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", "1")) if args.device == "cpu" else 8)
    rows = []
    for size in args.size:
        rows.append(measure(size, args.device, args.batch, args.steps))
        print(rows[-1], flush=True)
        if args.device == "cuda":
            torch.cuda.empty_cache()
    result = {"benchmark": "gpu_protect", "rows": rows, "torch": torch.__version__, "python": platform.python_version(),
              "note": "one PGD step of mmguard_bph (tap on LM layer 0) through a random-init Qwen2.5-VL of the "
                      "published dimensions; FLOPs counted by torch.utils.flop_counter on one step"}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
