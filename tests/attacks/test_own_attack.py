"""A new binding loss is one file: this test file defines one (the README's "Add your own attack" example),
registers it, and runs it through the recipe path and the protection loop."""
import pytest
import torch
from helpers import attack_spec, next_round, protect_to, stepping

from mmguard.attacks import losses
from mmguard.attacks.binding import BindingAttack
from mmguard.core.errors import UserError
from mmguard.core.registry import ATTACKS
from mmguard.data.synthetic import generate


class AnswerOnImage(BindingAttack):
    """l_bind = l_mass(Y, X): the answer tokens' attention spread evenly over the image tokens."""

    name = "test_answer_on_image"

    def tap_rows(self, encoded):
        return encoded.spans["Y"]

    def binding(self, view, taps):
        return torch.stack([losses.l_mass_layers(losses.source_abars(taps, view.layers, b, slice(None)),
                                                 e.spans["X"]) for b, e in enumerate(view.encoded)])


@pytest.fixture
def registered():
    ATTACKS.register(AnswerOnImage.name)(AnswerOnImage)
    yield AnswerOnImage.name
    ATTACKS._entries.pop(AnswerOnImage.name)  # leave the registry as the other tests see it
    ATTACKS._meta.pop(AnswerOnImage.name)


def test_a_binding_attack_from_a_test_file_runs(registered, tmp_path):
    # lambda_train 0: the step optimizes the new binding term alone, so that term must fall (next to l_train, one
    # step may trade it away, as it did at some inits)
    spec = attack_spec(registered, R=1, P=3, top_k=4, verify_k=2, eps_t=2, batch_size=4, lambda_bind=2.0,
                       lambda_train=0.0)
    assert spec.params == {"lambda_train": 0.0, "target": None, "lambda_bind": 2.0, "num_layers": 1}
    with pytest.raises(UserError, match="tau': not a key of attack 'test_answer_on_image'"):
        attack_spec(registered, tau=0.5)
    samples = generate(4, seed=5, types=("colour",))
    module = stepping(spec, samples, tmp_path)

    def l_bind():  # the binding term alone, on the current protected inputs
        view = module.views(samples, [module.triggers[s.id] for s in samples])[0]
        with torch.no_grad():
            view.with_images(module.images(samples, module.round), module.deltas(samples, module.round))
            _, taps = view.forward(rows=[module.attack.tap_rows(e) for e in view.encoded])
            return float(module.attack.binding(view, taps).mean())

    before = l_bind()
    module.training_step([s.id for s in samples], 0)
    next_round(module)
    assert l_bind() < before
    ps = protect_to(spec, samples)
    assert ps.attack == registered and ps.summary["linf_max_255"] <= 8
