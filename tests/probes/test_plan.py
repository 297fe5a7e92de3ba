"""Probe plans: what fine-tuning applies once, what it re-draws every epoch, what the training step does."""
import pytest
import torch

from mmguard.data.synthetic import generate
from mmguard.engine.build import build_probe
from mmguard.probes import ProbePlan
from mmguard.probes.base import sample_rng
from mmguard.core.registry import PROBES
from helpers import applied


@pytest.fixture(scope="module")
def clean():
    return generate(8, seed=0, types=("colour", "count", "position"), size=32)


@pytest.fixture(scope="module")
def protected(clean):
    g = torch.Generator().manual_seed(0)
    from mmguard.data.sample import tensor_to_pil

    return [s.replace(image=tensor_to_pil(s.pixels() + (torch.rand(s.pixels().shape, generator=g) - 0.5) * 0.06),
                      question=s.question + "  Zz, ok!") for s in clean]


def pix(samples):
    return torch.stack([s.pixels() for s in samples])


@pytest.mark.parametrize("spec", [
    {"name": "jpeg", "quality": 75}, {"name": "blur"}, {"name": "resize"}, {"name": "grayscale"},
    {"name": "bitdepth"}, {"name": "median"}, {"name": "iss", "mode": "grayscale"}, {"name": "iss"},
    {"name": "punctuation"}, {"name": "case"}, {"name": "whitespace"}, {"name": "jpeg_case"},
    {"name": "blur_whitespace"}, {"name": "mix", "fraction": 0.5},
    {"name": "combo", "probes": [{"name": "mix", "fraction": 0.25}, "jpeg", "case"]},
])
def test_deterministic_probes_are_applied_once(spec, clean, protected):
    probe = build_probe(spec)
    plan = probe.plan(protected, clean, seed=3)
    assert not plan.dynamic and plan.step is None
    again = build_probe(spec).plan(protected, clean, seed=3)
    assert torch.equal(pix(plan.samples), pix(again.samples))
    assert [s.question for s in plan.samples] == [s.question for s in again.samples]
    if not probe.set_level and spec["name"] not in ("combo", "jpeg_case", "blur_whitespace"):
        direct = [probe(s, sample_rng(3, s.id)) for s in protected]  # each sample alone, its own Generator
        assert torch.equal(pix(plan.samples), pix(direct))
    assert plan.epoch(5)[2] is plan.samples[2]  # nothing left to draw


@pytest.mark.parametrize("name", ["rcp", "rcp_punctuation"])
def test_random_probes_are_redrawn_every_epoch(name, protected):
    plan = PROBES.build(name).plan(protected, seed=0)
    assert plan.dynamic and all(plan.redraw)
    e0, e1 = pix(plan.epoch(0)), pix(plan.epoch(1))
    assert not torch.equal(e0, e1)  # another crop in the next epoch
    again = PROBES.build(name).plan(protected, seed=0)
    assert torch.equal(pix(again.epoch(0)), e0) and torch.equal(pix(again.epoch(1)), e1)  # same seed, same sequence
    assert not torch.equal(pix(PROBES.build(name).plan(protected, seed=1).epoch(0)), e0)
    if name == "rcp_punctuation":
        assert all("," not in s.question and "!" not in s.question for s in plan.epoch(1))
    # one epoch's draw of a sample is a function of (seed, epoch, index, id), not of the other samples
    assert torch.equal(plan.draw(3, plan.samples[3], 1).pixels(), e1[3])


def test_combo_applies_the_prefix_once_and_redraws_from_the_first_random_stage(protected):
    combo = build_probe({"name": "combo",
                         "probes": [{"name": "jpeg", "quality": 30}, "rcp", {"name": "bitdepth", "bits": 2}]})
    plan = combo.plan(protected, seed=0)
    assert torch.equal(pix(plan.samples), pix(applied(PROBES.build("jpeg", quality=30), protected)))
    assert [[p.name for _, p in stages] for stages in plan.redraw] == [["rcp", "bitdepth"]] * len(protected)
    for epoch in (0, 1):
        x = pix(plan.epoch(epoch))
        assert len(torch.unique(x)) <= 4  # bit depth runs after this epoch's crop
    assert not torch.equal(pix(plan.epoch(0)), pix(plan.epoch(1)))


def test_mix_after_a_random_stage_replaces_by_id(clean, protected):
    combo = build_probe({"name": "combo", "probes": ["rcp", {"name": "mix", "fraction": 0.5}]})
    plan = combo.plan(protected, clean, seed=0)
    kept = [i for i, s in enumerate(plan.samples) if s.question.endswith("ok!")]
    assert len(kept) == 4
    for i, s in enumerate(plan.samples):
        if i in kept:  # protected: still cropped anew each epoch
            assert plan.redraw[i] and not torch.equal(plan.draw(i, s, 0).pixels(), plan.draw(i, s, 1).pixels())
        else:  # replaced by its clean version: nothing of the earlier crop
            assert not plan.redraw[i] and torch.equal(s.pixels(), clean[i].pixels())


def test_ueraser_goes_to_the_training_step(protected):
    probe = PROBES.build("ueraser", copies=4)
    plan = probe.plan(protected, seed=0)
    assert plan.step is probe and not plan.dynamic
    assert torch.equal(pix(plan.samples), pix(protected))
    combo = build_probe({"name": "combo", "probes": ["grayscale", {"name": "ueraser", "copies": 2}, "punctuation"]})
    plan = combo.plan(protected, seed=0)
    assert plan.step.copies == 2 and not plan.dynamic
    assert torch.equal(pix(plan.samples), pix(applied(PROBES.build("grayscale"), protected)))
    assert "," not in plan.samples[0].question
    with pytest.raises(ValueError, match="after 'ueraser'"):
        build_probe({"name": "combo", "probes": ["ueraser", "jpeg"]}).plan(protected, seed=0)
    with pytest.raises(ValueError, match="one training-step"):
        build_probe({"name": "combo", "probes": ["ueraser", "ueraser"]}).plan(protected, seed=0)
    assert PROBES.build("ueraser").copies == 5


def test_plan_without_redraw_is_the_identity(protected):
    plan = ProbePlan(list(protected))
    assert not plan.dynamic and plan.draw(0, protected[0], 7) is protected[0]
