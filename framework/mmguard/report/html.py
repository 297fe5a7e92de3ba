"""``mmguard report DIR``: one self-contained ``DIR/report.html`` (every image a base64 data URI, no outside
script or style) and its figures as ``DIR/figures/*.png``.

Sections: what protection is left under each probe (in words), accuracy charts per victim and per threat
model, the stealth table, then per attack an image grid (clean, protected, amplified perturbation), the
triggered questions, and the answer-to-image attention of a surrogate on clean and protected inputs; last,
every results row. A part that cannot be drawn (no recipe, data that cannot be loaded again, a model that
cannot be built) is replaced by a sentence saying why; the rest of the report is still written. The page's
template is ``report/template.py``.
"""
from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmguard.report import figures
from mmguard.report.summary import (AttackSet, RunData, attack_labels, inserted_span, load_run, locate_trigger,
                                    mix_curve, protection_left, row_threat, shown_ids, stealth_rows)
from mmguard.report.template import template
from mmguard.metrics.table import with_optional

#: at most this many samples are encoded to measure trigger lengths in tokens
TRIGGER_TOKEN_SAMPLES = 1000


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _err(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _question_parts(clean: Optional[str], protected: Optional[str], trigger: Optional[str]):
    """(before, marked, after) of the protected question: the inserted trigger is ``marked``."""
    if protected is None:
        return None
    if clean is not None:
        start, end = inserted_span(clean, protected)
    else:
        start, end = locate_trigger(protected, trigger)
    return protected[:start], protected[start:end], protected[end:]


def _protected_image(a: AttackSet, sample_id: str):
    from PIL import Image

    rec = next((s for s in a.per_sample if str(s["id"]) == sample_id), None)
    if rec and rec.get("image") and (a.path / rec["image"]).is_file():
        with Image.open(a.path / rec["image"]) as im:
            return im.convert("RGB")
    if sample_id in a.protected:
        return a.protected[sample_id].pil
    raise FileNotFoundError(f"protected image of sample {sample_id!r} not found in {a.path}")


def _mass_line(masses: List[Dict[str, Any]]) -> Optional[str]:
    """One sentence: where the answer tokens look, clean vs protected, over the shown samples."""
    def mean(key):
        vals = [m[key] for m in masses if m[key] is not None]
        return sum(vals) / len(vals) if vals else None

    clean, prot, trig = mean("clean"), mean("protected"), mean("trigger")
    if prot is None:
        return None
    text = f"On the {len(masses)} samples shown, the answer tokens put {prot:.2f} of their attention on the image"
    text += f" of the protected input (clean input: {clean:.2f})" if clean is not None else " of the protected input"
    if trig is not None:
        text += f" and {trig:.2f} on the trigger"
    return text + "."


class ReportBuilder:
    def __init__(self, run: RunData, samples: int = 4, attention: bool = True, layer: int = 0):
        self.run = run
        self.samples = samples
        self.attention = attention
        self.layer = layer
        self.fig_dir = run.path / "figures"
        self.written: List[Path] = []
        self.trigger_tokens: Dict[str, Any] = {}
        from mmguard.report.attention import SurrogateCache

        self.cache = SurrogateCache()

    def _figure(self, fn, name: str, *args, **kwargs) -> Dict[str, str]:
        path = fn(self.fig_dir / f"{figures.safe_name(name)}.png", *args, **kwargs)
        self.written.append(path)
        return {"src": _data_uri(path), "file": f"figures/{path.name}"}

    # ------------------------------------------------------------------ per attack
    def attack_section(self, a: AttackSet) -> Dict[str, Any]:
        run = self.run
        surrogates = ", ".join(a.manifest.get("surrogates") or [])
        sec: Dict[str, Any] = {"label": a.label, "method": a.name, "surrogates": surrogates, "notes": [],
                               "grid": None, "attention": None, "attention_error": None, "questions": [],
                               "masses": []}
        if a.error:
            sec["notes"].append(a.error)
        ids = shown_ids(a, self.samples)
        triggers = a.triggers
        items = []
        for sid in ids:
            try:
                items.append({"id": sid, "protected": _protected_image(a, sid),
                              "clean": run.clean[sid].pil if sid in run.clean else None})
            except Exception as err:  # noqa: BLE001
                sec["notes"].append(f"sample {sid}: {_err(err)}")
        if run.clean_error:
            sec["notes"].append(f"Clean originals are not shown: {run.clean_error}.")
        elif any(it["clean"] is None for it in items):
            sec["notes"].append("Some shown samples have no clean original in the recipe's data (ids differ).")
        if items:
            try:
                sec["grid"] = self._figure(figures.image_grid, f"grid__{a.label}",
                                           f"{a.label}: clean, protected, perturbation", items)
            except Exception as err:  # noqa: BLE001
                sec["notes"].append(f"The image grid could not be drawn: {_err(err)}.")

        for sid in ids:
            clean = run.clean.get(sid)
            released = a.protected.get(sid)
            parts = _question_parts(clean.question if clean else None, released.question if released else None,
                                    triggers.get(sid))
            sec["questions"].append({"id": sid, "clean": clean.question if clean else None, "parts": parts,
                                     "trigger": triggers.get(sid), "answer": (clean or released).answer
                                     if (clean or released) else None})

        if self.attention:
            self._attention(a, sec, items)
        return sec

    def _attention(self, a: AttackSet, sec: Dict[str, Any], items: List[Dict]) -> None:
        from mmguard.report.attention import answer_attention, surrogate_spec, trigger_token_lengths

        run = self.run
        try:
            spec = surrogate_spec(run.cfg, a.label, a.manifest)
            adapter = self.cache.get(spec)
        except Exception as err:  # noqa: BLE001
            sec["attention_error"] = f"No attention maps: {_err(err)}."
            return
        sec["surrogate_spec"] = (f"{spec['name']} (seed {spec['seed']}, "
                                 f"{'pre-trained twin' if spec['pretrained'] else 'random init'}"
                                 + (f"; first of {spec['ensemble']} surrogates" if spec["ensemble"] > 1 else "")
                                 + ")")
        try:
            pairs = [(run.clean.get(str(s["id"])), s.get("trigger"), s.get("trigger_at"))
                     for s in a.per_sample[:TRIGGER_TOKEN_SAMPLES]]
            self.trigger_tokens[a.label] = trigger_token_lengths(adapter, pairs)
        except Exception as err:  # noqa: BLE001
            sec["notes"].append(f"Trigger lengths in tokens could not be measured: {_err(err)}.")
        maps = []
        triggers, offsets = a.triggers, a.trigger_offsets
        for it in items:
            sid = it["id"]
            clean = run.clean.get(sid)
            entry = {"id": sid, "clean_image": it["clean"], "protected_image": it["protected"], "clean": None,
                     "protected": None}
            try:
                if clean is not None:
                    entry["clean"] = answer_attention(adapter, clean, None, self.layer)
                    protected = clean.replace(image=it["protected"])
                    entry["protected"] = answer_attention(adapter, protected, triggers.get(sid), self.layer,
                                                          offsets.get(sid))
                elif sid in a.protected:  # the released sample: its question already carries the trigger
                    entry["protected"] = answer_attention(adapter, a.protected[sid].replace(image=it["protected"]),
                                                          None, self.layer)
            except Exception as err:  # noqa: BLE001
                sec["notes"].append(f"Attention of sample {sid} could not be computed: {_err(err)}.")
            maps.append(entry)
            sec["masses"].append({"id": sid,
                                  "clean": entry["clean"].image_mass if entry["clean"] else None,
                                  "protected": entry["protected"].image_mass if entry["protected"] else None,
                                  "trigger": entry["protected"].trigger_mass if entry["protected"] else None})
        if not any(m["clean"] or m["protected"] for m in maps):
            sec["attention_error"] = "No attention maps: no sample could be encoded."
            return
        sec["mass_line"] = _mass_line(sec["masses"])
        mapped = {m[k].mapped for m in maps for k in ("clean", "protected") if m[k] is not None}
        sec["attention_mapping"] = ", ".join(sorted(mapped))
        try:
            sec["attention"] = self._figure(
                figures.attention_figure, f"attention__{a.label}",
                f"{a.label}: answer-token attention on image tokens, LM layer {self.layer}, {spec['name']}", maps)
        except Exception as err:  # noqa: BLE001
            sec["attention_error"] = f"The attention figure could not be drawn: {_err(err)}."

    # ------------------------------------------------------------------ whole run
    def charts(self) -> List[Dict[str, str]]:
        rows = self.run.rows
        out = []
        victims = list(dict.fromkeys(r.get("victim") for r in rows if r.get("victim") is not None))
        for v in victims:
            fig = self._figure(figures.accuracy_by_probe, f"accuracy__{v}", rows, v)
            fig["caption"] = f"Accuracy per probe, victim {v}."
            fig["kind"] = "probe"
            out.append(fig)
        if attack_labels(rows):
            fig = self._figure(figures.accuracy_by_threat, "accuracy__threat_models", rows)
            fig["caption"] = "Accuracy per threat model (probe 'none'), averaged over victims."
            fig["kind"] = "threat"
            out.append(fig)
        curve = mix_curve(rows, self.run.cfg)
        if curve is not None:
            from mmguard.core.io import atomic_write_json

            atomic_write_json(self.run.path / "mix_curve.json", curve)
            fig = self._figure(figures.mix_curve_figure, "mix_curve", curve)
            fig["caption"] = ("Protection left (delta_acc) against the protected fraction: the mix probes replace the "
                              "rest of the training set by clean samples; the numbers are in mix_curve.json.")
            fig["kind"] = "mix"
            out.append(fig)
        return out

    def build(self) -> str:
        run = self.run
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        for old in self.fig_dir.glob("*.png"):  # figures of an earlier report of this run
            old.unlink()
        problems: List[str] = []
        if run.results.get("status") == "running":
            problems.append("This run is incomplete (results.json says status: running): it was stopped or is still "
                            "going; the rows below are those finished so far. The same command resumes it.")
        if run.cfg_error:
            problems.append(run.cfg_error)
        sections = [self.attack_section(a) for a in run.attacks]
        missing = [lab for lab in attack_labels(run.rows) if lab not in {a.label for a in run.attacks}]
        if missing:
            problems.append("No protected/ folder for " + ", ".join(missing) + ": no images, questions or attention "
                            "for them.")
        try:
            charts = self.charts()
        except Exception as err:  # noqa: BLE001
            charts = []
            problems.append(f"The accuracy charts could not be drawn: {_err(err)}.")
        stealth = stealth_rows(run, {k: v for k, v in self.trigger_tokens.items() if v})
        results = run.results
        columns = with_optional(run.rows)
        if any(r.get("surrogates") for r in run.rows):
            columns.insert(1, "surrogates")
        columns.insert(columns.index("probe") + 1, "threat")
        if any(r.get("note") for r in run.rows):  # e.g. a victim this machine cannot run
            columns.append("note")
        table = [[_fmt(row_threat(r) if c == "threat" else r.get(c)) for c in columns] for r in run.rows]
        ctx = {
            "title": f"mmguard report: {results.get('recipe', run.path.name)}",
            "recipe": results.get("recipe"), "seed": results.get("seed"), "elapsed": results.get("elapsed_s"),
            "run_dir": str(run.path), "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "left": protection_left(run.rows), "charts": charts, "stealth": stealth, "sections": sections,
            "columns": columns, "table": table, "problems": problems, "fmt": _fmt, "layer": self.layer,
            "attention": self.attention, "n_rows": len(run.rows),
        }
        return template().render(**ctx)


def write_report(run_dir: str | Path, samples: int = 4, attention: bool = True, layer: int = 0) -> Path:
    """Write ``run_dir/report.html`` and ``run_dir/figures/*.png``; returns the report's path."""
    from mmguard.core.io import atomic_write_text

    run = load_run(run_dir)
    html = ReportBuilder(run, samples=samples, attention=attention, layer=layer).build()
    return atomic_write_text(run.path / "report.html", html)
