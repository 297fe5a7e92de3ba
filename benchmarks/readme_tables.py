"""Superseded by ``python -m mmguard.report.results`` (framework/mmguard/report/results.py), which writes the
result pages under docs/results/ and the README's summary from the benchmarks' JSON; this script runs it, so the
old command keeps working.

    python benchmarks/readme_tables.py [--check]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "framework"))
from mmguard.report.results import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
