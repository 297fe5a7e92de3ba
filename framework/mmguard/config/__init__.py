"""From a recipe to objects, one way: ``recipe`` reads YAML (includes, overlays, overrides), ``spec`` resolves it
into a checked, typed spec tree, and the components are built from their specs by name."""
from mmguard.config.recipe import dump, load_recipe  # noqa: F401
from mmguard.config.spec import AttackSpec, DataSpec, ProbeSpec, RunSpec, VictimSpec, resolve  # noqa: F401
from mmguard.config.tree import to_tree  # noqa: F401
