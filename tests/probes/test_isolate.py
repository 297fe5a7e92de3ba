"""``isolate`` (anti-backdoor learning's isolation): a few epochs, the samples of lowest loss dropped, the victim's
fine-tune on the rest; the samples it drops are the ones a shortcut made easy."""
import pytest
import torch
from helpers import CPU

from mmguard.config.sections import FinetuneParams
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.synthetic import generate
from mmguard.engine.build import build_probe
from mmguard.engine.finetune import finetune
from mmguard.models import build_model

PARAMS = FinetuneParams(epochs=2, lr=3e-3, batch_size=8)


@pytest.fixture(scope="module")
def shortcut():
    """48 faint colour samples; every fourth asks a question of its own whose answer is always "red": the text
    alone gives it away, a shortcut learnt in the first epochs while the faint colours are not."""
    faint = generate(48, seed=1, types=("colour",), prefix="tr", contrast=0.3)
    easy = {s.id for s in faint[::4]}
    train = [s.replace(question="Say it now.", answer="red", aliases=[]) if s.id in easy else s for s in faint]
    return train, easy


def fit(train, seed=0, **params):
    adapter = build_model("tiny-llava", seed=0)
    probe = None if params.get("probe") is False else PROBES.build("isolate", **params)
    module = finetune(adapter, VICTIMS.build("full"), PARAMS, train, seed=seed, trainer=CPU, probe=probe, clean=train)
    return module, adapter


def test_the_lowest_losses_are_dropped_and_never_all():
    probe = PROBES.build("isolate", fraction=0.25)
    losses = {"a": 0.5, "b": 0.1, "c": 2.0, "d": 0.1, "e": 1.0, "f": 3.0, "g": 0.2, "h": 0.9}
    assert probe.dropped(losses) == {"b", "d"}  # 0.25 * 8 = 2, the two lowest (a tie, both in)
    assert PROBES.build("isolate", fraction=0.3).dropped(losses) == {"b", "d"}  # 2.4 rounds to 2
    assert PROBES.build("isolate", fraction=0.33).dropped(losses) == {"b", "d", "g"}  # 2.64 rounds to 3
    assert PROBES.build("isolate", fraction=0.9).dropped({"x": 1.0, "y": 0.0}) == {"y"}  # one always stays


def test_isolate_drops_the_shortcut_samples_and_trains_on_the_rest(shortcut):
    train, easy = shortcut
    module, _ = fit(train, fraction=0.25, epochs=1)
    assert set(module.record["isolated"]) == easy  # exactly the 12 of 48 with the shortcut
    assert len(module.trainer.train_dataloader.dataset) == 36
    assert module.trainer.current_epoch == PARAMS.epochs  # the victim's own epochs after isolation
    # scored on the shortcut samples' loss: a set without the shortcut drops other samples
    plain, _ = fit([s for s in train if s.id not in easy], fraction=0.25, epochs=1)
    assert len(plain.record["isolated"]) == 9 and not set(plain.record["isolated"]) & easy


def test_restart_is_a_plain_fine_tune_of_the_kept_samples(shortcut):
    train, easy = shortcut
    _, restarted = fit(train, fraction=0.25, epochs=1, restart=True)
    _, plain = fit([s for s in train if s.id not in easy], probe=False)
    _, continued = fit(train, fraction=0.25, epochs=1)
    a, b, c = (m.model.state_dict() for m in (restarted, plain, continued))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the start weights and the seed's random state again
    assert not all(torch.equal(a[k], c[k]) for k in a)  # ABL's default continues from the isolation weights


def test_isolate_in_a_combo_acts_on_what_the_other_stages_leave(shortcut):
    train, easy = shortcut
    combo = build_probe({"name": "combo",
                         "probes": ["question_strip", {"name": "isolate", "fraction": 0.25, "epochs": 1}]})
    plan = combo.plan(train, train, seed=0)
    assert plan.fit is not None and plan.fit.name == "isolate" and len(plan.samples) == 48
    with pytest.raises(ValueError, match="only one probe that changes how the fine-tune runs"):
        build_probe({"name": "combo", "probes": ["isolate", "early_stop"]}).plan(train, train, seed=0)
