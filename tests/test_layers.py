"""Imports flow one way: cli -> launch -> report -> engine -> config -> attacks/probes/victims/metrics -> models/data
-> core.
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
           "components": {"core", "data", "models"}, "config": {"core", "data", "models", "components"},
           "engine": {"core", "data", "models", "components", "config"},
           "report": {"core", "data", "models", "components", "config"},
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
