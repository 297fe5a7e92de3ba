"""Refresh the README's result tables from the benchmarks' markdown: every block opened by
``<!-- table: benchmarks/X.md -->`` and closed by ``<!-- end table -->`` gets the table lines (those starting with
'|') of that file, which the benchmark wrote. tests/test_readme.py fails when a block and its file disagree.

    python benchmarks/readme_tables.py
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (\S+) -->\n)(.*?)(<!-- end table -->)", re.S)


def table_lines(text: str):
    return [line for line in text.splitlines() if line.startswith("|")]


def refresh(readme: str) -> str:
    def fill(m):
        table = "\n".join(table_lines((ROOT / m.group(2)).read_text()))
        return f"{m.group(1)}{table}\n{m.group(4)}"

    return BLOCK.sub(fill, readme)


def main() -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = refresh(text)
    if new != text:
        path.write_text(new)
        print(f"refreshed {len(BLOCK.findall(new))} table(s) in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
