"""Stealth of a protection (METHOD.md, Evaluation): how far protected data is from clean data.

Images are float tensors in [0, 1], shaped (B, 3, H, W) (a single (3, H, W) image is accepted); every image
metric returns one value per image. Text: word-level edit distance, BLEU and perplexity under a causal LM.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.text import bleu_score


def _pair(clean: torch.Tensor, protected: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    clean, protected = torch.as_tensor(clean), torch.as_tensor(protected)
    if clean.shape != protected.shape:
        raise ValueError(f"clean and protected images differ in shape: {tuple(clean.shape)} vs "
                         f"{tuple(protected.shape)}")
    if clean.dim() == 3:
        clean, protected = clean.unsqueeze(0), protected.unsqueeze(0)
    if clean.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) or (C, H, W) images, got shape {tuple(clean.shape)}")
    return clean.detach().double(), protected.detach().double()


def psnr(clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB with data range 1: ``10 log10(1 / MSE)``; identical images give ``inf``."""
    clean, protected = _pair(clean, protected)
    out = peak_signal_noise_ratio(protected, clean, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return out.float()


def ssim(clean: torch.Tensor, protected: torch.Tensor, kernel_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Gaussian window, data range 1); identical images give 1. The window shrinks (odd) for
    images smaller than it."""
    clean, protected = (x.float() for x in _pair(clean, protected))  # float32: a double conv is 20x slower
    side = min(clean.shape[-2:])
    k = min(kernel_size, side if side % 2 else side - 1)
    if k < 3:
        raise ValueError(f"images of {tuple(clean.shape[-2:])} pixels are too small for SSIM")
    s = sigma * k / kernel_size
    out = structural_similarity_index_measure(protected, clean, data_range=1.0, reduction="none",
                                              kernel_size=k, sigma=s)
    return out.float()


_TV_WEIGHTS = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
               "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}


def lpips_unavailable_reason(net: str = "alex") -> Optional[str]:
    """Why LPIPS cannot run offline here (None when it can). Nothing is downloaded to find out."""
    if net not in _TV_WEIGHTS:
        return f"unknown LPIPS network {net!r}; choose one of {sorted(_TV_WEIGHTS)}"
    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed (torchmetrics' LPIPS builds its backbone from torchvision)"
    import torchmetrics.functional.image.lpips as tm_lpips
    import torchvision

    linear = Path(tm_lpips.__file__).parent / "lpips_models" / f"{net}.pth"
    if not linear.is_file():
        return f"LPIPS linear-layer weights {str(linear)!r} are not on disk"
    weights = getattr(torchvision.models, _TV_WEIGHTS[net][1]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file():
        return (f"the {_TV_WEIGHTS[net][0]} backbone weights are not on disk (expected {str(cached)!r}); "
                "LPIPS is skipped rather than downloading them")
    return None


@functools.lru_cache(maxsize=3)
def _lpips_module(net: str):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).eval()


def lpips(clean: torch.Tensor, protected: torch.Tensor, net: str = "alex") -> Tuple[Optional[torch.Tensor],
                                                                                   Optional[str]]:
    """``(per-image LPIPS, None)``, or ``(None, reason)`` when its weights are not on disk (never downloads)."""
    reason = lpips_unavailable_reason(net)
    if reason is not None:
        return None, reason
    clean, protected = _pair(clean, protected)
    module = _lpips_module(net)
    values = []
    with torch.no_grad():
        for c, p in zip(clean.float(), protected.float()):
            module.reset()
            values.append(module(p.unsqueeze(0).clamp(0, 1), c.unsqueeze(0).clamp(0, 1)).reshape(()))
    return torch.stack(values), None


def edit_distance(a: Union[str, Sequence[str]], b: Union[str, Sequence[str]], level: str = "word") -> int:
    """Levenshtein distance (insert, delete, substitute: cost 1) between two texts, over whitespace-separated
    words (``level="word"``) or characters (``level="char"``); token lists are used as given."""
    if level not in ("word", "char"):
        raise ValueError(f"level must be 'word' or 'char', got {level!r}")

    def tokens(x: Union[str, Sequence[str]]) -> List[str]:
        if isinstance(x, str):
            return x.split() if level == "word" else list(x)
        return list(x)

    s, t = tokens(a), tokens(b)
    prev = list(range(len(t) + 1))
    for i, si in enumerate(s, start=1):
        cur = [i] + [0] * len(t)
        for j, tj in enumerate(t, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (si != tj))
        prev = cur
    return prev[-1]


def bleu(predictions: Union[str, Sequence[str]], references: Union[str, Sequence[Any]], n_gram: int = 4,
         smooth: bool = False) -> float:
    """Corpus BLEU (torchmetrics) of predictions against references (one string or a list of strings each)."""
    if isinstance(predictions, str):
        predictions, references = [predictions], [references]
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(predictions):
        raise ValueError(f"bleu: {len(predictions)} predictions for {len(refs)} references")
    return float(bleu_score(list(predictions), refs, n_gram=n_gram, smooth=smooth))


@torch.no_grad()
def perplexity(texts: Union[str, Sequence[str]], model: Any, tokenizer: Any, batch_size: int = 8,
               max_length: Optional[int] = None) -> torch.Tensor:
    """Per-text perplexity ``exp(mean token NLL)`` under a causal LM (``model(input_ids, attention_mask).logits``).

    Each text is tokenized as the tokenizer does by default (with its BOS when it adds one); the first token is
    not predicted. Texts of fewer than two tokens get NaN.
    """
    if isinstance(texts, str):
        texts = [texts]
    device = next(model.parameters()).device if hasattr(model, "parameters") else torch.device("cpu")
    encoded = [tokenizer(t, truncation=max_length is not None, max_length=max_length)["input_ids"] for t in texts]
    out = torch.full((len(texts),), float("nan"))
    order = [i for i, ids in enumerate(encoded) if len(ids) >= 2]
    pad_id = getattr(tokenizer, "pad_token_id", None)
    step = batch_size if pad_id is not None else 1
    for start in range(0, len(order), step):
        idx = order[start:start + step]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id if pad_id is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device),
                                                reduction="none")
        keep = mask[:, 1:].to(device).float()
        mean_nll = (nll * keep).sum(1) / keep.sum(1)
        out[idx] = mean_nll.exp().cpu()
    return out


__all__ = ["psnr", "ssim", "lpips", "lpips_unavailable_reason", "edit_distance", "bleu", "perplexity"]
