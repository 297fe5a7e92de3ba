"""Protections (attacks, in the availability-poisoning vocabulary). Importing this package registers every attack:
each module of it is imported, so a new attack is one new file."""
import importlib
import pkgutil

from mmguard.attacks.base import Attack  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
