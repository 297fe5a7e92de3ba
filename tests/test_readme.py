"""The README's result tables are the benchmarks' own: a block opened by ``<!-- table: benchmarks/X.md -->`` and
closed by ``<!-- end table -->`` must equal the table (the lines starting with '|') of that file, which the
benchmark wrote. A number typed in by hand, or left behind by a re-run, fails here."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- table: (\S+) -->\n(.*?)<!-- end table -->", re.S)


def tables(text: str):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_tables_are_the_benchmarks_tables():
    readme = (ROOT / "README.md").read_text()
    blocks = BLOCK.findall(readme)
    assert blocks, "the README shows no generated table"
    for source, body in blocks:
        assert (ROOT / source).is_file(), f"README names {source}, which does not exist"
        assert tables(body) == tables((ROOT / source).read_text()), f"README's table from {source} differs from it"
