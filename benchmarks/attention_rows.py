"""Attention rows through the tap (SDPA + rows of one layer) against full eager attention.

METHOD.md: the binding losses need attention rows of the source set S in the first |K| layers only;
computing them from that layer's queries and keys is far cheaper than eager attention everywhere. This
measures both on one random-init LLaVA (CLIP + Llama) of a chosen size, side by side in one run, and
writes the numbers as JSON beside this script.

    python benchmarks/attention_rows.py --size small          # CPU, a few seconds
    python benchmarks/attention_rows.py --size 7b --device cuda --dtype bfloat16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration


def _load_tap():
    """The tap module alone (registering it), without importing the whole package and its data deps."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "framework" / "mmguard" / "models" / "attention_tap.py"
    spec = importlib.util.spec_from_file_location("mmguard_attention_tap", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


attention_tap = _load_tap()

SIZES = {
    "small": dict(hidden=256, layers=4, heads=8, inter=1024, vision_hidden=128, vision_layers=2, image=224, patch=14),
    "1b": dict(hidden=2048, layers=16, heads=16, inter=5632, vision_hidden=1024, vision_layers=24, image=336,
               patch=14),
    "7b": dict(hidden=4096, layers=32, heads=32, inter=11008, vision_hidden=1024, vision_layers=24, image=336,
               patch=14),
}


def build(size: str, dtype, device):
    s = SIZES[size]
    vision = CLIPVisionConfig(hidden_size=s["vision_hidden"], intermediate_size=4 * s["vision_hidden"],
                              num_hidden_layers=s["vision_layers"], num_attention_heads=max(2, s["vision_hidden"] // 64),
                              image_size=s["image"], patch_size=s["patch"])
    text = LlamaConfig(vocab_size=32064, hidden_size=s["hidden"], intermediate_size=s["inter"],
                       num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["heads"])
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=32000)
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg).to(dtype).eval()
    return model, (s["image"] // s["patch"]) ** 2, s["image"]


def timed(fn, repeats):
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return (time.perf_counter() - t) / repeats, peak, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--text", type=int, default=64, help="question + answer tokens")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model, n_img, image = build(args.size, dtype, args.device)
    ids = torch.randint(0, 31000, (args.batch, n_img + args.text), device=args.device)
    ids[:, 1:1 + n_img] = 32000
    pixels = torch.rand(args.batch, 3, image, image, device=args.device, dtype=dtype)
    rows = [torch.arange(ids.shape[1] - 8, ids.shape[1]) for _ in range(args.batch)]  # the answer rows Y

    attn_modules = [layer.self_attn for layer in model.model.language_model.layers]

    def tap():
        model.set_attn_implementation({"text_config": attention_tap.TAP_NAME})
        with torch.no_grad(), attention_tap.tap_rows(attn_modules, [0], rows) as taps:
            model(input_ids=ids, pixel_values=pixels, use_cache=False)
        return taps[0].probs

    def eager():
        model.set_attn_implementation("eager")
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values=pixels, use_cache=False, output_attentions=True)
        return [a[b][:, r] for b, (a, r) in enumerate(zip([out.attentions[0]] * args.batch, rows))]

    t_tap, m_tap, p_tap = timed(tap, args.repeats)
    t_eager, m_eager, p_eager = timed(eager, args.repeats)
    diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(p_tap, p_eager))
    result = {"size": args.size, "device": args.device, "dtype": args.dtype, "batch": args.batch,
              "sequence": int(ids.shape[1]), "tap_s": t_tap, "eager_s": t_eager, "speedup": t_eager / t_tap,
              "tap_peak_mib": m_tap, "eager_peak_mib": m_eager, "max_abs_diff": diff,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "host": platform.machine(), "torch": torch.__version__}
    print(json.dumps(result, indent=2))
    out = Path(os.environ.get("OUT") or Path(__file__).parent) / f"attention_rows_{args.size}_{args.device}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
