import os

import pytest
import torch

os.environ.setdefault("MMGUARD_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "mmguard-test"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", "1")))  # see cli.set_cpu_threads


@pytest.fixture(scope="session")
def synthetic_small():
    from mmguard.data.synthetic import generate

    return generate(8, seed=0, types=("colour", "count", "position", "colour_choice"))

