"""Shared test helpers (``import helpers``: the tests folder is on sys.path through its conftest.py)."""
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
