"""docs/results/*.md and the README's summary are what ``python -m mmguard.report.results`` writes from the
committed benchmark JSONs, byte for byte: a number typed into a generated block by hand, or left behind by a
re-run of a benchmark, fails here. A benchmark whose JSON does not exist yet (pretrained_regime while it is
measured) gives a one-line page block, not an error."""
import json
import re
import shutil
from pathlib import Path

import pytest

from mmguard.report import results

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_pages_are_what_the_script_writes():
    for rel in results.PAGES:
        assert (ROOT / rel).is_file(), f"{rel} is missing: run python -m mmguard.report.results"
        assert results.page_text(rel, ROOT) == (ROOT / rel).read_text(), (
            f"{rel} differs from what its sources give: run python -m mmguard.report.results")
    assert results.main(["--root", str(ROOT), "--check"]) == 0


def test_every_results_page_is_written_by_the_script_and_every_block_is_known():
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "results").glob("*.md")}
    assert pages == {rel for rel in results.PAGES if rel.startswith("docs/results/")}
    for rel in results.PAGES:
        names = [m[1] for m in results.BLOCK.findall((ROOT / rel).read_text())]
        assert set(names) == set(results.PAGES[rel][1]), rel
        for name in names:
            assert name in results.BLOCKS


def test_every_block_renders_from_existing_sources():
    optional = {results.REGIME_JSON, "benchmarks/pretrained_regime.md"}
    for name, block in results.BLOCKS.items():
        for source in block.sources:
            assert source in optional or (ROOT / source).is_file(), f"{name}: {source} does not exist"


def test_the_readme_summary_shows_no_number_outside_its_generated_block():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Results\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "the README has no '## Results' section"
    assert "<!-- results: summary -->" in section.group(1)
    prose = results.BLOCK.sub("", section.group(1))
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", prose)  # code and link targets
    assert not re.findall(r"\d", prose), "a number in the README's summary must come from the generated block"


def test_the_summary_numbers_come_from_the_benchmarks():
    summary = results.render("summary", ROOT)
    scrub = json.loads((ROOT / results.SCRUB).read_text())
    clean = [r["accuracy"] for r in scrub["rows"] if r["attack"] == "clean" and r["probe"] == "none"]
    assert f"| {results.plus_minus(*results.mean_std(clean))} |" in summary


def test_a_stale_block_is_refreshed_and_the_prose_kept():
    stale = ("before\n<!-- results: learnability -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- end results -->\n"
             "after\n")
    fresh = results.refresh(stale, ROOT)
    assert fresh.startswith("before\n<!-- results: learnability -->\n")
    assert fresh.endswith("<!-- end results -->\nafter\n")
    table = [line for line in (ROOT / "benchmarks/learnability.md").read_text().splitlines() if line.startswith("|")]
    assert fresh.splitlines()[2:-2] == table
    with pytest.raises(ValueError, match="no generated block is called 'nope'"):
        results.refresh("<!-- results: nope -->\n<!-- end results -->\n", ROOT)


@pytest.fixture
def tree(tmp_path):
    """A copy of the repository's results sources and pages, without the pre-trained regime's JSON."""
    for name in ("benchmarks", "docs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for rel in (results.REGIME_JSON, "benchmarks/pretrained_regime.md"):
        (tmp_path / rel).unlink(missing_ok=True)
    return tmp_path


def test_the_regime_page_says_not_measured_until_its_json_exists(tree):
    assert results.main(["--root", str(tree)]) == 0
    page = (tree / "docs/results/pretrained-regime.md").read_text()
    body = re.search(r"<!-- results: pretrained-regime -->\n(.*?)<!-- end results -->", page, re.S).group(1)
    assert body.count("\n") == 1 and body.startswith("Not measured yet")
    assert "not measured yet" in (tree / "README.md").read_text()

    md = ("# The paper's regime: title\n\nRun of the benchmark.\n\n## whitebox\n\n| probe | attack |\n|---|---|\n"
          "| none | mmguard_bph |\n")
    (tree / results.REGIME_JSON).write_text(json.dumps({"benchmark": "pretrained_regime", "done": "3/57"}))
    (tree / "benchmarks/pretrained_regime.md").write_text(md)
    assert results.main(["--root", str(tree), "--check"]) == 1  # the pages are stale now
    assert results.main(["--root", str(tree)]) == 0
    page = (tree / "docs/results/pretrained-regime.md").read_text()
    assert "In progress: 3/57 tasks done.\n\nRun of the benchmark.\n\n### whitebox\n\n| probe | attack |" in page
    assert "The paper's regime: title" not in page  # the page has its own title
    assert "measured: see" in (tree / "README.md").read_text()
    assert results.main(["--root", str(tree), "--check"]) == 0


def test_a_missing_page_is_written_and_a_lost_block_refused(tree, capsys):
    (tree / "docs/results/digits.md").unlink()
    assert results.main(["--root", str(tree)]) == 0
    page = (tree / "docs/results/digits.md").read_text()
    assert page.startswith("# Real images no model here has seen\n") and "| mmguard_crs | 3 |" in page
    first = page
    assert results.main(["--root", str(tree)]) == 0 and (tree / "docs/results/digits.md").read_text() == first

    (tree / "docs/results/scrubbing.md").write_text("# Scrubbing the trigger\n\nno table\n")
    assert results.main(["--root", str(tree)]) == 2
    assert "docs/results/scrubbing.md has lost its generated block(s) scrub" in capsys.readouterr().err
