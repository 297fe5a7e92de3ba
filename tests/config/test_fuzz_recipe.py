"""Property-based fuzzing of the recipe path: whatever a recipe or an override holds, loading it either gives a
spec or raises the one user-error type, never anything else."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmguard.config.recipe import load_recipe
from mmguard.config.spec import TOP_KEYS, resolve
from mmguard.core.errors import UserError
from mmguard.core.registry import ATTACKS, PROBES, VICTIMS

KEYS = ["name", "label", "model", "epochs", "lr", "eps_x", "eps_t", "tau", "R", "P", "surrogates", "weights",
        "probes", "quality", "fraction", "n_train", "n_test", "types", "contrast", "pretrained", "seed",
        "batch_size", "psnr_min", "eot", "adv_eps", "adv_steps", "rank", "limit", "train", "test"]
NAMES = ["synthetic", "llava_json", "tiny-llava", "none", *ATTACKS.names(), *PROBES.names(), *VICTIMS.names()]
scalars = (st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(NAMES) | st.sampled_from(["8/255", "1/0", "abc", "", "{model}/{x}"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(KEYS), c,
                                                                                   max_size=4), max_leaves=10)
entry = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
trees = st.fixed_dictionaries({}, optional={
    "data": entry, "victims": st.lists(entry, max_size=2), "attacks": st.lists(entry, max_size=2),
    "probes": st.lists(entry | st.sampled_from(NAMES), max_size=2), "eval": entry, "trainer": entry,
    "logger": entry, "seed": values, "name": values, "victim_recipes": values,
    "each": st.dictionaries(st.sampled_from(["victims", "attacks", "probes", "surrogates", "data"]), entry)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees | st.dictionaries(st.sampled_from([*TOP_KEYS, "junk"]), values, max_size=4))
def test_any_tree_resolves_or_is_a_user_error(tree):
    try:
        resolve(tree)
    except UserError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz.0123456789=[]{}:, -_/", max_size=24), max_size=3),
       st.text(max_size=60))
def test_any_override_or_yaml_text_is_a_spec_or_a_user_error(tmp_path, overrides, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_recipe(path, overrides)
    except UserError:
        pass
