"""Metrics: answer accuracy (utility), stealth (image and text distance to the clean data), the results table."""
from mmguard.metrics.accuracy import (  # noqa: F401
    VQAAccuracy, extract_choice, gold_letter, is_correct, normalize_answer,
)
from mmguard.metrics.stealth import (  # noqa: F401
    bleu, edit_distance, lpips, lpips_unavailable_reason, perplexity, psnr, ssim,
)

__all__ = ["VQAAccuracy", "extract_choice", "gold_letter", "is_correct", "normalize_answer", "bleu",
           "edit_distance", "lpips", "lpips_unavailable_reason", "perplexity", "psnr", "ssim"]
