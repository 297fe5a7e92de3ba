"""``mmguard report``: a tiny real run (two attacks, two probes, random-init models) gets its report.html written
by ``mmguard run``; the page is self-contained and renders in headless Chromium with every image decoded; the
report survives a run whose data and models are gone; the numbers it states in words are right."""
import html as htmllib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from mmguard.cli import main
from mmguard.report.summary import inserted_span, protection_left, recipe_threats, row_threat

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ATTACKS = ("random", "mmguard_bph")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    code = main(["run", str(ROOT / "recipes" / "quickstart.yaml"), "data.n_train=8", "data.n_test=4",
                 "attacks=[{name: random}, {name: mmguard_bph, R: 1, P: 1, top_k: 4, verify_k: 1, eps_t: 3}]",
                 "probes=[{name: none}, {name: jpeg, quality: 50}]",
                 "victims.0.pretrained=false", "victims.0.epochs=1", "trainer.progress_bar=false",
                 "logger.name=none", "--out", str(out)])
    assert code == 0
    return out


def _srcs(text):
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", text)


def test_run_writes_a_self_contained_report(run_dir):
    page = (run_dir / "report.html").read_text()
    figs = {p.name for p in (run_dir / "figures").glob("*.png")}
    for a in ATTACKS:
        assert {f"grid__{a}.png", f"attention__{a}.png"} <= figs
    assert {"accuracy__tiny-llava_full.png", "accuracy__threat_models.png"} <= figs
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    assert {r.get("threat_model") for r in rows if r["attack"] in ATTACKS} == {"white-box"}  # the victim's own model
    srcs = _srcs(page)
    assert len(srcs) == len(figs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<(script|link)\b", page) and "http://" not in page and "https://" not in page
    # the trigger of the first sample is marked inside its protected question
    manifest = json.loads((run_dir / "protected" / "mmguard_bph" / "manifest.json").read_text())
    trigger = manifest["samples"][0]["trigger"]
    assert trigger and f"<mark>{htmllib.escape(trigger, quote=True)}</mark>" in page
    assert "Under jpeg, " in page and "No attention maps" not in page


def _driver():
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        if os.environ.get("MMGUARD_SKIP_BROWSER") == "1":
            pytest.skip("MMGUARD_SKIP_BROWSER=1: the headless browser check is skipped")
        pytest.fail(f"{CHROMIUM} or {CHROMEDRIVER} is missing: install them (apt-get install chromium "
                    "chromium-driver, or run .ci/system-deps), or set MMGUARD_SKIP_BROWSER=1 to skip this check")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)


def test_report_renders_in_headless_chromium(run_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _driver()
    try:
        driver.get((run_dir / "report.html").resolve().as_uri())
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.className, i.naturalWidth, i.naturalHeight])")
        assert images and all(w > 0 and h > 0 for _, w, h in images), images
        classes = [c for c, _, _ in images]
        assert sum("chart-probe" in c for c in classes) == 1 and sum("chart-threat" in c for c in classes) == 1
        assert classes.count("attention") == len(ATTACKS) and classes.count("grid") == len(ATTACKS)
        rows = driver.find_elements(By.CSS_SELECTOR, "#stealth-table tbody tr")
        assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == list(ATTACKS)
        assert driver.find_element(By.ID, "protection-left").is_displayed()
    finally:
        driver.quit()


def test_report_command_says_what_it_cannot_show(run_dir, tmp_path, capsys):
    """A run whose recipe data and surrogate model cannot be had again: the report still comes, and says why."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    recipe = (copy / "recipe.yaml").read_text()
    recipe = recipe.replace("name: synthetic", f"name: llava_json\n  train: {tmp_path / 'gone.json'}")
    recipe = recipe.replace("name: tiny-llava", "name: tiny-nosuchfamily")  # the surrogates
    (copy / "recipe.yaml").write_text(recipe)
    assert main(["report", str(copy), "--samples", "2"]) == 0
    page = (copy / "report.html").read_text()
    assert "Clean originals are not shown" in page and "could not build surrogate tiny-nosuchfamily" in page
    assert page.count('class="stealth-row"') == len(ATTACKS)
    assert f"wrote {copy / 'report.html'}" in capsys.readouterr().out


def test_report_says_when_a_run_is_incomplete(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    results = json.loads((copy / "results.json").read_text())
    assert results["status"] == "complete"
    results["status"] = "running"
    (copy / "results.json").write_text(json.dumps(results))
    assert main(["report", str(copy), "--no-attention"]) == 0
    assert "This run is incomplete" in (copy / "report.html").read_text()


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_protection_left_in_words():
    def row(attack, probe, delta, victim="tiny-llava/lora"):
        return {"attack": attack, "victim": victim, "probe": probe, "accuracy": 0.9 - (delta or 0),
                "delta_acc": delta, "surrogates": ["tiny-llava"]}

    rows = [row("zero_shot", "none", None), row("clean", "none", 0.0), row("mmguard_bph", "none", 0.55),
            row("random", "none", 0.05), row("clean", "iss", 0.0), row("mmguard_bph", "iss", 0.12),
            row("random", "iss", 0.02), row("clean", "case", 0.0), row("random", "case", 0.0),
            row("mmguard_bph", "case", -0.1)]
    lines = protection_left(rows)
    assert lines[0].startswith("Without a probe") and "mmguard_bph with delta_acc 0.55" in lines[0]
    assert lines[1] == "Under iss, mmguard_bph keeps 0.12 of its 0.55 delta_acc (22% left)."
    assert lines[2] == "Under case, random keeps 0.00 of its 0.05 delta_acc (0% left)."
    assert protection_left([row("clean", "none", 0.0)]) == ["No attack was run, so there is no protection to measure."]


def test_threat_models_and_trigger_spans():
    # a row says what the run decided from the weights; one written before rows did gets it from the recipe
    assert row_threat({"attack": "a", "threat_model": "gray-box", "surrogates": ["tiny-llava"],
                       "victim": "tiny-llava/lora"}) == "gray-box"
    cfg = {"victims": [{"label": "tiny-llava/full", "model": "tiny-llava", "seed": 6, "pretrained": False},
                       {"label": "tiny-llava/lora", "model": "tiny-llava", "seed": 6, "pretrained": True}],
           "attacks": [{"label": "a", "surrogates": [{"name": "tiny-llava", "seed": 6, "pretrained": False}]}]}
    rows = [{"attack": "a", "victim": v, "surrogates": ["tiny-llava"]} for v in ("tiny-llava/full", "tiny-llava/lora")]
    recipe_threats(cfg, rows)
    assert [row_threat(r) for r in rows] == ["white-box", "gray-box"]  # the twin is not the random init
    # names alone: other families are black-box; the same family cannot tell white- from gray-box
    assert row_threat({"attack": "a", "surrogates": ["tiny-qwen3_vl", "tiny-gemma3"], "victim": "tiny-llava/x"}) == \
        "black-box"
    assert row_threat({"attack": "a", "surrogates": ["tiny-llava"], "victim": "tiny-llava/x"}) == "unknown"
    assert row_threat({"attack": "a", "surrogates": ["tiny-llava"], "victim": "org/some-checkpoint/x"}) == "unknown"
    assert row_threat({"attack": "clean", "victim": "tiny-llava/x"}) is None
    q = "What colour is the shape?"
    assert inserted_span(q, q + " yarrow now") == (len(q), len(q) + len(" yarrow now"))
    assert inserted_span("Is it red?", "Is it quartz red?") == (6, 13)
    assert inserted_span(q, q) == (0, 0)
