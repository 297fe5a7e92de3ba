"""Constants with one home (timm's ``data/constants.py`` habit): normalization statistics, option letters and
the LoRA dropouts."""

# OpenAI CLIP's image statistics (LLaVA, Qwen2.5-VL, GLM-4V, Mllama, InternVL's CLIP-style processors)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP (PaliGemma) and Qwen3-VL: [0, 1] mapped to [-1, 1]
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
# multiple-choice option letters, in order
LETTERS = "ABCDEFGHIJ"
# LoRA dropout: two settings, not one. The protection loop's surrogate adaptation (METHOD.md: LoRA rank 8, dropout
# 0.1; the attacks' ``lora_dropout``) and a victim's fine-tune (the LoRA family's ``dropout``: peft's usual 0.05).
SURROGATE_LORA_DROPOUT = 0.1
VICTIM_LORA_DROPOUT = 0.05
