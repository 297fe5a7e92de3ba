"""Imports flow one way: cli -> launch -> report -> engine -> config -> attacks/probes/victims/metrics -> models/data
-> core; config (the specs) reads no component or model code, only core and data.
Read from the source (every import statement, also inside functions), so a late import cannot hide a cycle."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "framework" / "mmguard"
# each layer and the layers it may import (besides itself)
ORDER = ["core", "data", "models", "components", "config", "engine", "report", "launch", "cli"]
LAYER_OF = {"core": "core", "data": "data", "models": "models", "attacks": "components", "probes": "components",
            "victims": "components", "metrics": "components", "config": "config", "engine": "engine",
            "report": "report", "launch": "launch", "cli": "cli"}
ALLOWED = {"core": set(), "data": {"core"}, "models": {"core", "data"},
           "components": {"core", "data", "models"}, "config": {"core", "data"},
           "engine": {"core", "data", "models", "components", "config"},
           # the engine's builder (engine/build.py): a report rebuilds the data and the surrogates as the run did
           "report": {"core", "data", "models", "components", "config", "engine"},
           "launch": set(ORDER) - {"cli"},  # an entry layer (sweep, collect) that the CLI wires
           "cli": set(ORDER)}


def layer(module: str) -> str:
    parts = module.split(".")
    return LAYER_OF.get(parts[1], "core") if len(parts) > 1 else "core"


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmguard"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("mmguard"))


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    rel = path.relative_to(PACKAGE).with_suffix("")
    own = layer("mmguard." + ".".join(rel.parts)) if rel.parts[0] != "__init__" else "cli"
    for module in imports(path):
        target = layer(module)
        assert target == own or target in ALLOWED[own], f"{rel} ({own}) imports {module} ({target})"


def module_of(path: Path) -> str:
    parts = ("mmguard",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """Module -> the package's modules it imports (a ``from X import name`` imports module X.name when there is
    one, else X)."""
    modules = {module_of(p): p for p in PACKAGE.rglob("*.py")}

    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmguard"):
                edges |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else known(node.module)
                          for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {known(a.name) for a in node.names if a.name.startswith("mmguard")}
        graph[name] = edges - {name}
    return graph


def test_no_import_cycle():
    """No module reaches itself through the modules it imports (late imports inside functions count)."""
    graph, cycles = import_graph(), []
    state = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
