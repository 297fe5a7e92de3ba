"""Constants with one home (timm's ``data/constants.py`` habit): normalization statistics and option letters."""

# OpenAI CLIP's image statistics (LLaVA, Qwen2.5-VL, GLM-4V, Mllama, InternVL's CLIP-style processors)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# SigLIP (PaliGemma) and Qwen3-VL: [0, 1] mapped to [-1, 1]
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
# multiple-choice option letters, in order
LETTERS = "ABCDEFGHIJ"
