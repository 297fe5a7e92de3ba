"""The README's result tables are the benchmarks' own: a block opened by ``<!-- table: benchmarks/X.md -->`` and
closed by ``<!-- end table -->`` must equal the table (the lines starting with '|') of that file, which the
benchmark wrote (``python benchmarks/readme_tables.py`` copies them). A number typed in by hand, or left behind by
a re-run, fails here."""
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool():
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("readme_tables")


def test_readme_tables_are_the_benchmarks_tables():
    t = tool()
    readme = (ROOT / "README.md").read_text()
    blocks = t.BLOCK.findall(readme)
    assert blocks, "the README shows no generated table"
    for _, source, body, _ in blocks:
        assert (ROOT / source).is_file(), f"README names {source}, which does not exist"
        assert t.table_lines(body) == t.table_lines((ROOT / source).read_text()), (
            f"README's table from {source} differs from it: run python benchmarks/readme_tables.py")


def test_refresh_replaces_a_stale_block_and_keeps_the_rest():
    t = tool()
    source = "benchmarks/learnability.md"
    stale = f"before\n<!-- table: {source} -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- end table -->\nafter\n"
    fresh = t.refresh(stale)
    assert fresh.startswith("before\n") and fresh.endswith("<!-- end table -->\nafter\n")
    assert t.table_lines(fresh) == t.table_lines((ROOT / source).read_text()) != t.table_lines(stale)
