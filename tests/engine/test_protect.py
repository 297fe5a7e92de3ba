"""A release's manifest: LPIPS is computed per image where its backbone weights are on disk, and otherwise absent
with the reason (never a bare null)."""
import json

import pytest
import torch

from mmguard.config.spec import resolve
from mmguard.data.loaders import load_synthetic
from mmguard.engine.protect import protect
from mmguard.metrics import stealth

RECIPE = {"data": {"name": "synthetic", "n_train": 3, "n_test": 2},
          "victims": [{"name": "full", "model": "tiny-llava", "pretrained": False}],
          "attacks": [{"name": "random"}]}


def _manifest(tmp_path, name):
    spec = resolve(RECIPE).attacks[0]
    protect(spec, load_synthetic(n_train=3, n_test=2)["train"], tmp_path / name, state_dir=tmp_path / f"state-{name}")
    return json.loads((tmp_path / name / "manifest.json").read_text())


def test_lpips_absent_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(stealth, "lpips_unavailable_reason", lambda net="alex": "the alexnet backbone weights are "
                        "not on disk")
    m = _manifest(tmp_path, "without")
    assert m["lpips"] is None and m["lpips_reason"] == "the alexnet backbone weights are not on disk"
    assert m["summary"]["lpips"] is None and all(s["lpips"] is None for s in m["samples"])


def test_lpips_computed_when_its_weights_are_there(tmp_path, monkeypatch):
    seen = []

    def fake(clean, protected, net="alex"):  # stands for torchmetrics' LPIPS, whose weights this machine lacks
        seen.append(float((protected - clean).abs().max()))
        return torch.tensor([0.25]), None

    monkeypatch.setattr(stealth, "lpips_unavailable_reason", lambda net="alex": None)
    monkeypatch.setattr(stealth, "lpips", fake)
    m = _manifest(tmp_path, "with")
    assert m["lpips"] == pytest.approx(0.25) and m["lpips_reason"] is None
    assert [s["lpips"] for s in m["samples"]] == [0.25] * 3 and len(seen) == 3 and all(0 < x <= 8 / 255 + 1e-6
                                                                                      for x in seen)



def test_a_release_is_keyed_by_its_samples_pixels_and_text_not_their_ids(tmp_path):
    """Generated sets reuse ids across data seeds: a release made on seed 0's images must not be read back as
    seed 1's."""
    import dataclasses

    from mmguard.engine.protect import protection_hash

    spec = resolve(RECIPE).attacks[0]
    seed0, seed1 = load_synthetic(n_train=3, n_test=2, seed=0)["train"], load_synthetic(n_train=3, n_test=2, seed=1)["train"]
    assert [s.id for s in seed0] == [s.id for s in seed1]
    assert protection_hash(spec, seed0) != protection_hash(spec, seed1)
    assert protection_hash(spec, seed0) == protection_hash(spec, load_synthetic(n_train=3, n_test=2, seed=0)["train"])
    reworded = [dataclasses.replace(seed0[0], question=seed0[0].question + " Answer briefly.")] + seed0[1:]
    assert protection_hash(spec, reworded) != protection_hash(spec, seed0)
    on_disk = tmp_path / "a.png"
    seed0[0].pil.save(on_disk)
    by_file = [dataclasses.replace(seed0[0], image=on_disk)] + seed0[1:]
    key = protection_hash(spec, by_file)
    seed1[0].pil.resize((48, 40)).save(on_disk)  # another picture under the same name
    assert protection_hash(spec, by_file) != key
