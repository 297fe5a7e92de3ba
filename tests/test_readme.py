"""The README is a short entry: its first two commands are the ones a newcomer (and CI, through .ci/run) runs, it
names every command of the CLI, it stays short, and every relative link in it and in docs/ leads to a file of the
repository (and, for a link to a heading, to that heading). Its results summary and the tables under
docs/results/ are checked in tests/report/test_results.py."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
QUICKSTART = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . && "
              "mmguard run recipes/quickstart.yaml")
TESTS = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
         "pip install -e \".[test,pretrained]\" && .ci/system-deps && python -m pytest -q")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def pages():
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def command_after(text: str, marker: str) -> str:
    """The first line starting with ``python3 -m venv`` after ``marker``: what .ci/run's awk reads."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    return next(line for line in lines[start:] if line.startswith("python3 -m venv"))


def test_the_first_two_commands_install_and_run_the_quickstart_and_the_tests():
    text = README.read_text()
    assert command_after(text, "**Install and run the quickstart**") == QUICKSTART
    assert command_after(text, "**Install and run the tests:**") == TESTS
    venv = [line for line in text.splitlines() if line.startswith("python3 -m venv")]
    assert venv[:2] == [QUICKSTART, TESTS], "the README's first commands are the quickstart's and the tests'"


def test_ci_reads_the_test_command_from_the_readme():
    ci = (ROOT / ".ci" / "run").read_text()
    program = re.search(r"awk '([^']+)' README\.md", ci)
    assert program, ".ci/run no longer reads the README with awk: update this test with it"
    out = subprocess.run(["awk", program.group(1), str(README)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == TESTS


def test_the_readme_is_short_and_names_every_command():
    from mmguard.cli import build_parser

    text = README.read_text()
    assert len(text.splitlines()) <= 250, "the README is an entry: move detail to a page under docs/"
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    missing = [name for name in sub.choices if f"mmguard {name}" not in text]
    assert not missing, f"the README's command list lacks {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path):
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", path.read_text(), re.M)}


def test_every_relative_link_leads_to_a_file_of_the_repository():
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not dest.is_file() or ROOT not in dest.parents:
                broken.append(f"{where} (no such file in the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        for target in LINK.findall(page.read_text()):
            if not re.match(r"[a-z]+:", target) and target.partition("#")[0]:
                todo.append((page.parent / target.partition("#")[0]).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in pages() if p.resolve() not in seen]
    assert not orphans, f"no link leads to {orphans}"
