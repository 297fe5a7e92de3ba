"""The specs are plain settings: importing every config module loads no model code (no torch, no transformers)."""
import subprocess
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "framework" / "mmguard" / "config"


def test_config_imports_no_model_code():
    modules = sorted(f"mmguard.config.{p.stem}" for p in CONFIG.glob("*.py") if p.stem != "__init__")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'lightning', 'peft')"
            " or m.startswith(('mmguard.models', 'mmguard.attacks', 'mmguard.probes', 'mmguard.victims'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(modules) >= 7 and out.strip() == "[]"
