"""Fine-tuning recipes (victims). Importing this package registers every victim: each module of it is imported,
so a new victim is one new file."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
