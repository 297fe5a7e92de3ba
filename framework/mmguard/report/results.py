"""``python -m mmguard.report.results``: the result pages under docs/results/ and the README's short summary,
written from the committed benchmark results (``benchmarks/*.json``, the ``.md`` the benchmarks wrote beside
them, ``benchmarks/digits/seeds/collect.json``), so that no number in a table is typed by hand.

A page is hand-written prose around generated blocks, ``<!-- results: NAME -->`` ... ``<!-- end results -->``,
whose bodies ``BLOCKS[NAME]`` renders from the files in its ``sources`` (an edit inside a block is overwritten;
the prose is kept). A page of ``PAGES`` that does not exist is written with its title and blocks; a source that
does not exist yet (``benchmarks/pretrained_regime.json`` while it is measured) renders one line saying so. The
output depends on the sources and the prose alone (no time, no machine): ``tests/report/test_results.py`` checks
that the committed pages equal it.

    python -m mmguard.report.results            # refresh the pages after a benchmark wrote its JSON
    python -m mmguard.report.results --check    # exit 1 (and write nothing) when a page is stale
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from mmguard.metrics.table import mean_std, plus_minus

BLOCK = re.compile(r"(<!-- results: (\S+) -->\n)(.*?)(<!-- end results -->)", re.S)
REGIME_JSON = "benchmarks/pretrained_regime.json"


@dataclasses.dataclass(frozen=True)
class Block:
    sources: Tuple[str, ...]  # paths from the repository root: what the block is rendered from
    render: Callable[[Path], str]


def _json(root: Path, rel: str):
    return json.loads((root / rel).read_text())


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _ms(m: Optional[float], sd: Optional[float], digits: int = 3) -> str:
    """``mean ± std`` with ``digits`` decimals (``plus_minus`` at three); ``-`` for no mean."""
    if digits == 3 or m is None:
        return plus_minus(m, sd)
    return f"{m:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def _pm(values: Sequence, digits: int = 3) -> str:
    """Mean ± sample std of ``values`` (ddof=1)."""
    return _ms(*mean_std(values), digits)


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _cells(rows: Sequence[Dict], *keys: str) -> Dict[Tuple, List[Dict]]:
    """Rows grouped by ``keys``, in the order they first appear."""
    out: Dict[Tuple, List[Dict]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def _order(rows: Sequence[Dict], key: str) -> List:
    return list(dict.fromkeys(r.get(key) for r in rows))


SCRUB = "benchmarks/scrub_results.json"


def quickstart(root: Path) -> str:
    """The quickstart's attacks over seeds, no probe: accuracy, delta_acc, accuracy seed by seed, stealth."""
    d = _json(root, SCRUB)
    rows = []
    for (attack,), members in _cells([r for r in d["rows"] if r["probe"] == "none"], "attack").items():
        by_seed = {r["seed"]: r for r in members}
        rows.append([attack, _pm([r["accuracy"] for r in members]),
                     _pm([r["delta_acc"] for r in members]),
                     ", ".join(_f(by_seed[s]["accuracy"]) if s in by_seed else "-" for s in d["seeds"]),
                     _pm([r["psnr"] for r in members], 2), _pm([r["ssim"] for r in members])])
    return "\n".join(_table(["attack", "accuracy", "delta_acc", "accuracy per seed", "psnr", "ssim"], rows))


def scrub(root: Path) -> str:
    """Accuracy per probe (the columns), mean ± std over the seeds."""
    d = _json(root, SCRUB)
    probes = _order(d["rows"], "probe")
    cells = _cells(d["rows"], "attack", "probe")
    rows = [[a, *(_pm([r["accuracy"] for r in cells.get((a, p), [])]) for p in probes)]
            for a in _order(d["rows"], "attack")]
    return "\n".join(_table(["attack", *probes], rows))


MATRIX = "benchmarks/threat_matrix_seeds.json"


def _matrix_rows(d: Dict):
    """Per (threat, victim, probe) in the benchmark's order: the victim's spec and its rows."""
    cells = _cells(d["rows"], "threat", "victim", "probe")
    for t in d["threats"]:
        for v in t["victims"]:
            for p in t["probes"]:
                members = cells.get((t["threat"], v["label"], p["label"]))
                if members:
                    yield t, v, p["label"], members


def threat_matrix(root: Path) -> str:
    """Accuracy mean ± std over the seeds and, in brackets, mean delta_acc, per (threat, victim, probe)."""
    d = _json(root, MATRIX)
    attacks = list(dict.fromkeys(a for t in d["threats"] for a in t["attacks"]))
    rows, skipped = [], []
    for t, v, probe, members in _matrix_rows(d):
        by_attack = _cells(members, "attack")
        if all(r["accuracy"] is None for r in members):
            note = next((r["note"] for r in members if r.get("note")), "not run")
            skipped.append(f"- {t['threat']} {v['label']} ({probe}): {note}")
            continue
        model = next((r["threat_model"] for r in members if r.get("threat_model")), "-")
        row = [model + (" (twin)" if v.get("pretrained") else ""), t["threat"], v["label"], probe,
               _pm([r["accuracy"] for r in by_attack.get(("clean",), [])])]
        for a in attacks:
            got = by_attack.get((a,))
            mean_delta = mean_std([r["delta_acc"] for r in got or []])[0]
            row.append("-" if not got else f"{_pm([r['accuracy'] for r in got])} ({_f(mean_delta)})")
        rows.append(row)
    lines = _table(["threat model", "recipe", "victim", "probe", "clean", *attacks], rows)
    return "\n".join(lines + ([""] + skipped if skipped else []))


def protections(root: Path) -> str:
    """Per threat recipe and attack: its surrogates, PSNR, SSIM and protection time (means over the seeds)."""
    d = _json(root, MATRIX)
    rows = [[t["threat"], name, ", ".join(a["surrogates"]), _f(a["psnr"], 2), _f(a["ssim"]),
             _f(a["protect_seconds"], 1)] for t in d["threats"] for name, a in t["attacks"].items()]
    return "\n".join(_table(["threat", "attack", "surrogates", "PSNR (dB)", "SSIM", "protect (s)"], rows))


BINDING = "benchmarks/binding_ablation.json"


def _binding_table(d: Dict, keep: Callable[[Dict], bool]) -> str:
    summary = [c for c in d["summary"] if keep(c)]
    labels = _order(summary, "label")
    cells = {(c["threat"], c["probe"], c["label"]): c for c in summary}
    rows = []
    for threat, probe in dict.fromkeys((c["threat"], c["probe"]) for c in summary):
        row = [threat, probe]
        for label in labels:
            c = cells.get((threat, probe, label))
            if c is None:
                row.append("-")
                continue
            cell = plus_minus(c["delta_mean"], c["delta_std"])
            t = c.get("vs_lambda0")
            if t and t.get("mean_diff") is not None and t.get("p") is not None:
                cell += f" ({t['mean_diff']:+.3f}, p {t['p']:.2f})"
            row.append(cell)
        rows.append(row)
    return "\n".join(_table(["threat", "probe", *labels], rows))


def _is_default(c: Dict, factor: str, defaults: Dict) -> bool:
    return c[factor] is None or c[factor] == defaults[factor]


def binding_lambda(root: Path) -> str:
    """delta_acc per lambda_bind (tau and |K| at their defaults)."""
    d = _json(root, BINDING)
    return _binding_table(d, lambda c: c["lambda_bind"] == 0 or all(
        _is_default(c, f, d["defaults"]) for f in ("tau", "num_layers")))


def binding_other(root: Path) -> str:
    """delta_acc per tau and |K| (lambda_bind at its default), against lambda_bind 0."""
    d = _json(root, BINDING)
    return _binding_table(d, lambda c: c["lambda_bind"] == 0 or _is_default(c, "lambda_bind", d["defaults"]))


def binding_tally(root: Path) -> str:
    """One sentence: how the comparisons with lambda_bind 0 fall."""
    tests = [c["vs_lambda0"] for c in _json(root, BINDING)["summary"]
             if c.get("vs_lambda0") and c["vs_lambda0"].get("p") is not None]
    small = min(t["p"] for t in tests)
    below = sum(t["p"] < 0.05 for t in tests)
    up = sum(t["mean_diff"] > 0 for t in tests)
    return (f"Comparisons with lambda_bind 0 (every variant, threat and probe): {len(tests)}; p < 0.05 in "
            f"{below}; smallest p {small:.2f}; {up} point up, {len(tests) - up} down.")


DIGITS = "benchmarks/digits/seeds/collect.json"


def digits(root: Path) -> str:
    """``mmguard collect`` of the digit runs: mean ± std over the seeds."""
    rows = [[r["attack"], str(r["n"]), *(_ms(r[f"{k}_mean"], r[f"{k}_std"], 2 if k == "psnr" else 3)
                                         for k in ("accuracy", "delta_acc", "psnr", "ssim"))]
            for r in _json(root, DIGITS)["rows"]]
    return "\n".join(_table(["attack", "n", "accuracy", "delta_acc", "psnr", "ssim"], rows))


def md_tables(rel: str) -> Block:
    """The table lines of a benchmark's markdown (what it wrote from its JSON)."""
    return Block((rel,), lambda root: "\n".join(_table_lines((root / rel).read_text())))


def pretrained_regime(root: Path) -> str:
    """benchmarks/pretrained_regime.md below its title (headings one level down); one line without the JSON."""
    if not (root / REGIME_JSON).is_file():
        return (f"Not measured yet: `{REGIME_JSON}` does not exist (`python benchmarks/pretrained_regime.py` "
                f"writes it).")
    d, lines = _json(root, REGIME_JSON), (root / REGIME_JSON).with_suffix(".md").read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    body = ["#" + line if line.startswith("## ") else line for line in lines]
    done = d.get("done")
    if done and len(set(done.split("/"))) > 1:
        body = [f"In progress: {done} tasks done.", *body]
    return "\n".join(body).strip("\n")


def perf(root: Path) -> str:
    d = _json(root, "benchmarks/perf.json")
    rows = [[f"(a) PGD step, framework / hand-written, {p['size']}", f"{p['framework_over_hand_written']:.2f}"]
            for p in d["pgd"]]
    rows += [[f"(b) BPH step / em_image step, {p['size']}", f"{p['bph_over_em_image']:.2f}"] for p in d["pgd"]]
    rows.append(["(c) fine-tuning step, framework / hand-written",
                 f"{d['finetune']['framework_over_hand_written']:.2f}"])
    rows += [[f"(d) evaluation of {e['samples']} samples, {e['victim']}: speedup over the uncached loop",
              f"{e['speedup']:.2f}x"] for e in (d["evaluate_zero_shot"], d["evaluate"])]
    targets = ", ".join(f"{k} {'met' if v else 'not met'}" for k, v in d["targets"].items())
    return "\n".join(_table(["measurement", "ratio"], rows) + ["", f"Targets: {targets}."])


def scale(root: Path) -> str:
    d = _json(root, "benchmarks/scale_protect.json")
    rows = [[str(r["n"]), _f(r["seconds"], 1), _f(r["peak_rss_mb"], 1), _f(r["seconds_per_image"], 2)]
            for r in d["rows"]]
    return "\n".join(_table(["images", "seconds", "peak RSS (MB)", "s per image"], rows)
                     + ["", f"Peak memory, largest over smallest: {d['rss_ratio_largest_to_smallest']:.2f}x."])


ATTENTION = tuple(f"benchmarks/attention_rows_{s}.json" for s in ("small_cpu", "1b_cuda", "7b_cuda"))


def attention_rows(root: Path) -> str:
    rows = [[d["size"], d["gpu"] or d["device"], d["dtype"], _f(d["tap_s"]), _f(d["eager_s"]),
             f"{d['speedup']:.2f}x", _f(d["tap_peak_mib"], 0), _f(d["eager_peak_mib"], 0), f"{d['max_abs_diff']:.1e}"]
            for d in (_json(root, rel) for rel in ATTENTION)]
    return "\n".join(_table(["size", "device", "dtype", "tap (s)", "eager (s)", "speedup", "tap peak (MiB)",
                             "eager peak (MiB)", "largest difference"], rows))


def generate_speed(root: Path) -> str:
    d = _json(root, "benchmarks/generate_speed.json")
    rows = [[c["model"], c["data"], c["regime"], _f(c["old_s"]), _f(c["new_s"]), f"{c['speedup']:.2f}x",
             "yes" if c["identical"] else "no"] for c in d["cells"]]
    return "\n".join(_table(["model", "data", "regime", "uncached (s)", "cached (s)", "speedup", "same answers"],
                            rows) + ["", f"Speedup {d['speedup_min']:.2f}x to {d['speedup_max']:.2f}x, geometric "
                                         f"mean {d['speedup_geomean']:.2f}x, over {d['n']} samples a cell."])


def summary(root: Path) -> str:
    """The README's short summary: accuracy of the clean victim and of the protected ones in the main settings."""
    attacks = ("trigger_text", "mmguard_bph", "mmguard_crs")
    header = ["setting", "clean", *attacks, "page"]
    scrub_cells = _cells(_json(root, SCRUB)["rows"], "attack", "probe")
    rows = []
    for probe, words in (("none", "white-box, no probe (the quickstart, 3 seeds)"),
                         ("onion", "white-box, ONION filters the questions")):
        rows.append([words, *(_pm([r["accuracy"] for r in scrub_cells.get((a, probe), [])])
                              for a in ("clean", *attacks)),
                     "[quickstart](docs/results/quickstart.md)" if probe == "none"
                     else "[scrubbing](docs/results/scrubbing.md)"])
    m = _json(root, MATRIX)
    cells = {(t["threat"], probe): members for t, _, probe, members in _matrix_rows(m)}
    for threat, probe, words in (("graybox", "none", "gray-box: a wider victim, no probe"),
                                 ("blackbox", "none", "black-box: another family, no probe"),
                                 ("blackbox", "jpeg_q75", "black-box, JPEG q75"),
                                 ("blackbox", "question_strip", "black-box, words after the `?` cut")):
        by_attack = _cells(cells[(threat, probe)], "attack")
        rows.append([words, *(_pm([r["accuracy"] for r in by_attack.get((a,), [])]) for a in ("clean", *attacks)),
                     "[threat matrix](docs/results/threat-matrix.md)"])
    dig = {r["attack"]: r for r in _json(root, DIGITS)["rows"]}
    rows.append(["real digit scans, white-box, no probe",
                 *(plus_minus(dig[a]["accuracy_mean"], dig[a]["accuracy_std"]) if a in dig else "-"
                   for a in ("clean", *attacks)), "[digits](docs/results/digits.md)"])
    page = "[the paper's regime](docs/results/pretrained-regime.md)"
    regime = f"measured: see {page}" if (root / REGIME_JSON).is_file() else f"not measured yet ({page})"
    return "\n".join(_table(header, rows) + [
        "", "Accuracy on the clean test set, mean ± sample std over the seeds (lower: stronger protection; `-`: "
            "not in that benchmark). LoRA on the pre-trained model, the paper's own regime: " + regime + "."])


BLOCKS: Dict[str, Block] = {
    "summary": Block((SCRUB, MATRIX, DIGITS, REGIME_JSON), summary),
    "quickstart": Block((SCRUB,), quickstart),
    "scrub": Block((SCRUB,), scrub),
    "threat-matrix": Block((MATRIX,), threat_matrix),
    "threat-protections": Block((MATRIX,), protections),
    "binding-lambda": Block((BINDING,), binding_lambda),
    "binding-other": Block((BINDING,), binding_other),
    "binding-tally": Block((BINDING,), binding_tally),
    "digits": Block((DIGITS,), digits),
    "learnability": md_tables("benchmarks/learnability.md"),
    "pretrained-learnability": md_tables("benchmarks/pretrained_learnability.md"),
    "pretrained-learnability-clipart": md_tables("benchmarks/pretrained_learnability_clipart.md"),
    "pretrained-regime": Block((REGIME_JSON, "benchmarks/pretrained_regime.md"), pretrained_regime),
    "perf": Block(("benchmarks/perf.json",), perf),
    "scale-protect": Block(("benchmarks/scale_protect.json",), scale),
    "attention-rows": Block(ATTENTION, attention_rows),
    "generate-speed": Block(("benchmarks/generate_speed.json",), generate_speed),
}

#: every file this script writes: its title (for a page that does not exist yet) and the blocks it must hold
PAGES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "README.md": ("mmguard", ("summary",)),
    "docs/results/quickstart.md": ("The quickstart over seeds", ("quickstart",)),
    "docs/results/scrubbing.md": ("Scrubbing the trigger", ("scrub",)),
    "docs/results/threat-matrix.md": ("Threat models", ("threat-matrix", "threat-protections")),
    "docs/results/binding-ablation.md": ("Does the binding term matter?",
                                         ("binding-lambda", "binding-tally", "binding-other")),
    "docs/results/digits.md": ("Real images no model here has seen", ("digits",)),
    "docs/results/learnability.md": ("The tiny world, and why the quickstart trains from init", ("learnability",)),
    "docs/results/pretrained-learnability.md": ("The pre-trained world: fine-tuning effnet-gemma3-270m",
                                                ("pretrained-learnability", "pretrained-learnability-clipart")),
    "docs/results/pretrained-regime.md": ("The paper's regime: protection against LoRA on the pre-trained model",
                                          ("pretrained-regime",)),
    "docs/results/performance.md": ("Performance", ("perf", "scale-protect", "attention-rows", "generate-speed")),
}


def render(name: str, root: Path) -> str:
    if name not in BLOCKS:
        raise ValueError(f"no generated block is called {name!r} (known: {', '.join(BLOCKS)})")
    return BLOCKS[name].render(root)


def refresh(text: str, root: Path) -> str:
    """``text`` with every generated block's body rendered again from its sources; the rest unchanged."""
    return BLOCK.sub(lambda m: f"{m.group(1)}{render(m.group(2), root)}\n{m.group(4)}", text)


def page_text(rel: str, root: Path) -> str:
    """What this script writes to ``rel``: the page (or its skeleton) with its blocks rendered."""
    title, blocks = PAGES[rel]
    path = root / rel
    empty = "\n\n".join(f"<!-- results: {b} -->\n<!-- end results -->" for b in blocks)
    text = path.read_text() if path.is_file() else f"# {title}\n\n{empty}\n"  # a new page: title and blocks
    missing = [b for b in blocks if f"<!-- results: {b} -->" not in text]
    if missing:
        raise ValueError(f"{rel} has lost its generated block(s) {', '.join(missing)}: put back "
                         f"'<!-- results: NAME -->' and '<!-- end results -->' where the table goes")
    return refresh(text, root)


def default_root() -> Path:
    here = Path(__file__).resolve().parents[3]  # framework/mmguard/report/results.py in a checkout
    return here if (here / "benchmarks").is_dir() else Path.cwd()


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mmguard.report.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=None, help="the repository (default: this checkout)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page is stale")
    args = ap.parse_args(argv)
    root = (args.root or default_root()).resolve()
    stale = []
    try:
        for rel in PAGES:
            new, path = page_text(rel, root), root / rel
            if path.is_file() and path.read_text() == new:
                continue
            stale.append(rel)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(new)
    except (OSError, ValueError, KeyError) as err:
        print(f"mmguard.report.results: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    verb = "stale" if args.check else "wrote"
    print(f"{verb}: {', '.join(stale)}" if stale else f"{len(PAGES)} pages up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
