"""One builder (``engine/build.py``) turns specs into objects: nothing else in framework/ or benchmarks/ calls a
registry's ``build`` (read from the source), and each builder builds every registered component of its kind
(the data builder: ``tests/data/test_loaders.py``, whose fixtures make every loader's files)."""
import ast
from pathlib import Path

import pytest

from mmguard.attacks.base import Attack
from mmguard.config.spec import ModelSpec, resolve
from mmguard.core import registry
from mmguard.core.model_names import is_tiny
from mmguard.core.registry import ATTACKS, MODELS, PROBES, VICTIMS, Registry
from mmguard.engine.build import build_attack, build_model, build_probe, build_victim
from mmguard.probes.base import Probe
from mmguard.victims.base import Victim

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "framework" / "mmguard").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")])
BUILDER = ROOT / "framework" / "mmguard" / "engine" / "build.py"
ALLOWED = {
    BUILDER: "the builder",
    ROOT / "framework" / "mmguard" / "core" / "registry.py": "the registry's own definition",
}
# ``MODELS.get(name)(...)``: a model family's entry point, called by the models' own layer (``models/zoo.py``, the
# builder's primitive for an adapter at its initial weights)
ENTRY_POINTS = {ROOT / "framework" / "mmguard" / "models" / "zoo.py"}
REGISTRY_NAMES = {n for n, v in vars(registry).items() if isinstance(v, Registry)} | {"REGISTRIES"}


def registry_calls(path: Path):
    """(line, text) of every call that builds a component straight from a registry: ``<registry>.build(...)``
    and ``<registry>.get(name)(...)``, where a registry is a name imported from ``mmguard.core.registry`` (or
    bound to one, or to ``REGISTRIES[kind]``)."""
    tree = ast.parse(path.read_text())
    names, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mmguard.core.registry":
            names |= {a.asname or a.name for a in node.names if a.name in REGISTRY_NAMES}
        elif isinstance(node, ast.ImportFrom) and node.module == "mmguard.core":
            modules |= {a.asname or a.name for a in node.names if a.name == "registry"}
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == "mmguard.core.registry" and a.asname}

    def is_registry(expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in names
        if isinstance(expr, ast.Attribute):
            return expr.attr in REGISTRY_NAMES and isinstance(expr.value, ast.Name) and expr.value.id in modules
        if isinstance(expr, ast.Subscript):
            return is_registry(expr.value)
        return False

    for node in ast.walk(tree):  # a name bound to a registry is one too (``reg = REGISTRIES[kind]``)
        if isinstance(node, ast.Assign) and is_registry(node.value):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "build" and is_registry(f.value):
            yield node.lineno, ast.unparse(node)
        elif (isinstance(f, ast.Call) and isinstance(f.func, ast.Attribute) and f.func.attr == "get"
              and is_registry(f.func.value) and path not in ENTRY_POINTS):
            yield node.lineno, ast.unparse(node)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_builder_builds_from_a_registry(path):
    if path in ALLOWED:
        return
    found = [f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in registry_calls(path)]
    assert not found, "build it with mmguard.engine.build instead:\n" + "\n".join(found)


def test_the_source_check_sees_what_it_forbids(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("from mmguard.core.registry import PROBES as P, REGISTRIES\n"
                   "from mmguard.core import registry\n"
                   "def f(kind):\n"
                   "    reg = REGISTRIES[kind]\n"
                   "    return P.build('jpeg'), reg.build('x'), registry.VICTIMS.build('full'), P.get('jpeg')(),\\\n"
                   "        P.get('jpeg'), Builder().build()\n")
    assert [line for line, _ in registry_calls(src)] == [5, 5, 5, 5]
    assert {path.name for path in ALLOWED} == {"build.py", "registry.py"}


# -- every registered component, through its builder -----------------------------------------------------------
PARAMS = {"combo": {"probes": [{"name": "jpeg", "quality": 30}, "case"]}}


@pytest.mark.parametrize("name", ATTACKS.names())
def test_build_attack(name):
    spec = resolve({"attacks": [{"name": name, "surrogates": [{"name": "tiny-llava", "pretrained": False}]}]})
    attack = build_attack(spec.attacks[0])
    assert isinstance(attack, ATTACKS.get(name)) and isinstance(attack, Attack) and attack.name == name


@pytest.mark.parametrize("name", ["none", *PROBES.names()])
def test_build_probe(name):
    spec = resolve({"victims": [], "probes": [{"name": name, **PARAMS.get(name, {})}]}).probes[0]
    probe = build_probe(spec)
    if name == "none":
        assert probe is None
        return
    assert isinstance(probe, PROBES.get(name)) and isinstance(probe, Probe) and probe.name == name
    assert build_probe({"name": name, **PARAMS.get(name, {})}).name == name  # as a combo lists its parts


def test_a_combo_is_built_from_built_parts():
    combo = build_probe({"name": "combo", "probes": ["jpeg_case", {"name": "combo", "probes": ["blur"]}]})
    assert [p.name for p in combo.probes] == ["jpeg", "case", "blur"]
    with pytest.raises(TypeError, match="build_probe"):
        PROBES.get("combo")(probes=["jpeg"])


@pytest.mark.parametrize("name", VICTIMS.names())
def test_build_victim(name):
    victim = build_victim(resolve({"victims": [{"name": name, "pretrained": False}]}).victims[0])
    assert isinstance(victim, VICTIMS.get(name)) and isinstance(victim, Victim) and victim.name == name


@pytest.mark.parametrize("name", MODELS.names())
def test_build_model(name):
    if not is_tiny(name):
        pytest.skip("a registered pre-trained model (tests/models/test_effnet_gemma3.py builds it)")
    adapter = build_model(ModelSpec(name, pretrained=False, seed=0))
    assert adapter.name == name and adapter.attention_modules
