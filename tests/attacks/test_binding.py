"""The binding terms work as losses: sign-PGD on the image with the binding alone (lambda_train 0) lowers the BPH
and the CRS term themselves, computed through the attack's own ``tap_rows``/``binding`` on a ``SurrogateView``,
and far more than random steps of the same size do; under BPH the attention mass that the answer rows Y and the
trigger rows G put on the perturbation tokens D rises. Random-init surrogates held fixed (Q=0)."""
import functools
import tempfile

import pytest
import torch
from helpers import attack_spec, stepping

from mmguard.attacks import losses
from mmguard.attacks.view import CleanPass, SurrogateView
from mmguard.data.synthetic import generate

FAMILIES = ["tiny-llava", "tiny-gemma3"]
STEPS, EPS, ALPHA = 8, 8 / 255, 2 / 255   # METHOD.md's budget, a few steps


@functools.lru_cache(maxsize=None)
def optimize(attack_name, family, control=False):
    """(binding before, after, mass on D before, after): PGD with the attack's own loss, or (``control``)
    sign steps in random directions. Mass: the sum over D of the mean attention row of G and Y, layer 0, with D
    the final perturbation's top-tau tokens both times (so before and after read the same keys)."""
    samples = generate(6, seed=5, types=("colour",))
    spec = attack_spec(attack_name, [family], each={"Q": 0, "eps_t": 3}, lambda_train=0.0)
    module = stepping(spec, samples, tempfile.mkdtemp(prefix="mmguard-binding-"))
    adapter, attack = module.surrogates[0], module.attack
    adapter.model.eval()
    layers = attack.tapped_layers
    xs = [s.pixels() for s in samples]
    view = SurrogateView(adapter, samples, [module.triggers.get(s.id) for s in samples], layers,
                         CleanPass(adapter, samples, xs, layers), offsets=[module.offsets[s.id] for s in samples])

    def images(deltas):
        return [(x + d).clamp(0, 1) for x, d in zip(xs, deltas)]

    def measure(deltas, d_keys):
        with torch.no_grad():
            keys = attack.perturbation_positions(view.with_images(images(d_keys), d_keys)) \
                if attack_name == "mmguard_bph" else None
            view.with_images(images(deltas), deltas)
            _, taps = view.forward(rows=[attack.tap_rows(e) for e in view.encoded])
            binding = float(attack.binding(view, taps).mean())
            if attack_name != "mmguard_bph":
                return binding, None
            mass = [float(losses.mean_attention(taps[layers[0]].probs[b])[  # rows: G then Y
                keys[b]].sum()) for b in range(len(view.encoded))]
            return binding, sum(mass) / len(mass)

    gen = torch.Generator().manual_seed(0)
    start = [torch.zeros_like(x) for x in xs]
    deltas = start
    for _ in range(STEPS):
        leaves = [d.clone().requires_grad_(True) for d in deltas]
        grads = torch.autograd.grad(attack.loss(view.with_images(images(leaves), leaves)).mean(), leaves)
        if control:
            grads = [torch.randn(g.shape, generator=gen) for g in grads]
        deltas = [(d.detach() - ALPHA * g.sign()).clamp(-EPS, EPS) for d, g in zip(leaves, grads)]
    (b0, m0), (b1, m1) = measure(start, deltas), measure(deltas, deltas)
    return b0, b1, m0, m1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attack", ["mmguard_bph", "mmguard_crs"])
def test_pgd_on_the_binding_alone_lowers_the_binding_term(attack, family):
    before, after, _, _ = optimize(attack, family)
    c_before, c_after, _, _ = optimize(attack, family, control=True)
    assert c_before == before  # the same start
    assert after < before - 2e-4, (before, after)
    assert before - after > 2 * (c_before - c_after), (before, after, c_after)  # the gradient, not any change


@pytest.mark.parametrize("family", FAMILIES)
def test_bph_moves_attention_from_answer_and_trigger_onto_the_perturbation(family):
    _, _, mass_before, mass_after = optimize("mmguard_bph", family)
    _, _, c_before, c_after = optimize("mmguard_bph", family, control=True)
    assert 0 < mass_before < mass_after < 1
    assert mass_after - mass_before > 2 * (c_after - c_before), (mass_before, mass_after, c_before, c_after)
