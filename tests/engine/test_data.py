"""The training data path re-draws random probes every epoch, deterministically."""
import hashlib
import torch
from helpers import CPU as TRAINER

from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine import data as engine_data
from mmguard.engine.data import EpochSampler, SampleDataset
from mmguard.engine.finetune import finetune
from mmguard.models import build_model



def digest(sample) -> str:
    return hashlib.sha1(sample.pixels().numpy().tobytes() + sample.question.encode()).hexdigest()[:12]


def record_training(monkeypatch, probe, seed=0, epochs=3):
    """(epoch, sample id, digest) of every sample the collator got, through a real Lightning fine-tune."""
    seen = []
    original = engine_data.TrainCollator.__call__

    def spy(self, samples):
        seen.append([(s.id, digest(s)) for s in samples])
        return original(self, samples)

    monkeypatch.setattr(engine_data.TrainCollator, "__call__", spy)
    samples = generate(8, seed=1, types=("colour",), size=32)
    finetune(build_model("tiny-llava", seed=0), VICTIMS.build("lora", rank=4, alpha=8, dropout=0.0),
             FinetuneParams(lr=1e-3, warmup_ratio=0.0, epochs=epochs, batch_size=4), samples, seed=seed,
             trainer=TRAINER, probe=None if probe is None else PROBES.build(probe["name"], **{
                 k: v for k, v in probe.items() if k != "name"}))
    per_epoch = [dict(x for batch in seen[e * 2:(e + 1) * 2] for x in batch) for e in range(epochs)]
    assert all(len(e) == 8 for e in per_epoch)  # 8 samples, batches of 4: two batches per epoch
    return per_epoch


def test_rcp_is_redrawn_every_epoch_and_seeded(monkeypatch):
    probe = {"name": "rcp", "fraction": 0.75}
    a = record_training(monkeypatch, probe)
    for e in (1, 2):  # each epoch crops anew
        assert sum(a[e][i] != a[0][i] for i in a[0]) >= 6
    assert record_training(monkeypatch, probe) == a  # same seed: the same crops, epoch by epoch
    assert record_training(monkeypatch, probe, seed=1)[0] != a[0]


def test_deterministic_probe_is_the_same_every_epoch(monkeypatch):
    a = record_training(monkeypatch, {"name": "jpeg", "quality": 30}, epochs=2)
    assert a[0] == a[1]
    plain = record_training(monkeypatch, None, epochs=2)
    assert plain[0] == plain[1] and plain[0] != a[0]


def test_epoch_sampler_tags_indices_with_the_epoch():
    sampler = EpochSampler(torch.utils.data.SequentialSampler(range(3)))
    assert list(sampler) == [(0, 0), (0, 1), (0, 2)]
    assert list(sampler) == [(1, 0), (1, 1), (1, 2)]  # a new pass is the next epoch
    sampler.set_epoch(7)
    assert [e for e, _ in sampler] == [7, 7, 7] and len(sampler) == 3
    samples = generate(2, seed=0, types=("colour",), size=16)
    ds = SampleDataset(samples, redraw=lambda i, s, epoch: s.replace(question=f"{s.question} e{epoch} i{i}"))
    assert ds[(4, 1)].question.endswith("e4 i1") and ds[0].question.endswith("e0 i0")
