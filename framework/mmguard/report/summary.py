"""What a run directory holds, read back for the report: results rows, the recipe, and each protected set
(manifest, released samples, the clean originals they came from); plus the numbers the report states in
words (threat model of a row, the protection left under each probe, the stealth of each attack).

Nothing here draws or needs a model; figures.py draws, attention.py runs the surrogates, html.py assembles.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmguard.core.errors import UserError
from mmguard.data.sample import Sample

#: rows that are references, not attacks
REFERENCE_ROWS = ("zero_shot", "clean")


@dataclasses.dataclass
class AttackSet:
    """One ``protected/<label>/`` folder of a run."""

    label: str
    path: Path
    manifest: Dict[str, Any]
    protected: Dict[str, Sample]  # by sample id, as released (data.json)
    error: Optional[str] = None  # why the released samples could not be read

    @property
    def name(self) -> str:
        return self.manifest.get("attack", self.label)

    @property
    def per_sample(self) -> List[Dict[str, Any]]:
        return list(self.manifest.get("samples") or [])

    @property
    def triggers(self) -> Dict[str, Optional[str]]:
        return {str(s["id"]): s.get("trigger") for s in self.per_sample}

    @property
    def trigger_offsets(self) -> Dict[str, Optional[int]]:
        """Where each trigger sits in its question (older manifests: at the end)."""
        return {str(s["id"]): s.get("trigger_at") for s in self.per_sample}


@dataclasses.dataclass
class RunData:
    path: Path
    results: Dict[str, Any]
    cfg: Any  # the run's resolved recipe as written (recipe.yaml, a mapping) or None
    cfg_error: Optional[str]
    attacks: List[AttackSet]
    clean: Dict[str, Sample]  # train samples by id (the originals of the protected sets)
    clean_error: Optional[str]

    @property
    def rows(self) -> List[Dict[str, Any]]:
        return list(self.results.get("rows") or [])


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_run(run_dir: str | Path, need_clean: bool = True) -> RunData:
    """Read a run directory written by ``mmguard run``. Only results.json is required; whatever else is missing
    or unreadable is recorded (``cfg_error``, ``clean_error``, ``AttackSet.error``) for the report to say."""
    run_dir = Path(run_dir)
    res_path = run_dir / "results.json"
    if not res_path.is_file():
        raise UserError(f"{run_dir} has no results.json: not a run directory written by 'mmguard run'")
    results = json.loads(res_path.read_text())

    cfg, cfg_error = None, None
    seeds = results.get("seeds")
    recipe = run_dir / "recipe.yaml"
    if seeds and (run_dir / f"seed-{seeds[0]}" / "recipe.yaml").is_file():
        recipe = run_dir / f"seed-{seeds[0]}" / "recipe.yaml"  # a seed axis: its first seed's, whose sets are shown
    if recipe.is_file():
        try:  # read as written: a model or file gone since the run must not hide what can still be shown
            import yaml

            cfg = yaml.safe_load(recipe.read_text(encoding="utf-8"))
            if not isinstance(cfg, dict):
                raise ValueError("not a mapping")
        except Exception as err:  # noqa: BLE001 - reported, not fatal
            cfg_error = f"recipe.yaml could not be read ({_reason(err)})"
    else:
        cfg_error = "the run directory has no recipe.yaml"

    attacks = [read_attack_set(p) for p in sorted_attack_dirs(run_dir, results)]
    recipe_threats(cfg, results.get("rows") or [])

    clean: Dict[str, Sample] = {}
    clean_error = None
    if need_clean and attacks:
        if cfg is None:
            clean_error = f"clean originals unavailable: {cfg_error}"
        else:
            try:
                from mmguard.config.spec import resolve
                from mmguard.engine.build import build_data

                # the data section alone, as the run resolved it: a model gone since the run must not hide the
                # clean originals
                data = resolve({"seed": cfg.get("seed", 0), "data": cfg["data"], "victims": []}, str(recipe)).data
                clean = {s.id: s for s in build_data(data)["train"]}
            except Exception as err:  # noqa: BLE001
                clean_error = f"the recipe's data could not be loaded again ({_reason(err)})"
    return RunData(run_dir, results, cfg, cfg_error, attacks, clean, clean_error)


def sorted_attack_dirs(run_dir: Path, results: Dict[str, Any]) -> List[Path]:
    """``protected/*`` folders with a manifest, in the order their attacks appear in results.json (a run with a
    seed axis shows its first seed's protected sets)."""
    seeds = results.get("seeds")
    root = run_dir / (f"seed-{seeds[0]}/protected" if seeds else "protected")
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    order = {}
    for r in results.get("rows") or []:
        order.setdefault(r.get("attack"), len(order))
    return sorted(dirs, key=lambda p: (order.get(p.name, len(order)), p.name))


def read_attack_set(path: Path) -> AttackSet:
    manifest = json.loads((path / "manifest.json").read_text())
    protected: Dict[str, Sample] = {}
    error = None
    try:
        from mmguard.data.loaders import read_conversation_file

        protected = {s.id: s for s in read_conversation_file(path / "data.json")}
    except Exception as err:  # noqa: BLE001
        error = f"data.json could not be read ({_reason(err)})"
    return AttackSet(path.name, path, manifest, protected, error)


def shown_ids(attack: AttackSet, n: int) -> List[str]:
    """The first ``n`` sample ids of a protected set (the same ids for every attack of a run)."""
    ids = [str(s["id"]) for s in attack.per_sample] or list(attack.protected)
    return ids[:max(0, n)]


# ------------------------------------------------------------------------------------------- threat models
def victim_model(victim_label: str) -> str:
    """``tiny-llava/lora`` -> ``tiny-llava`` (the victim recipe's name follows the last slash)."""
    return victim_label.rsplit("/", 1)[0] if "/" in victim_label else victim_label


def recipe_threats(cfg: Any, rows: Sequence[Dict[str, Any]]) -> None:
    """Rows written before they carried ``threat_model``: theirs from the run's recipe (its victims' and attacks'
    model specs, by label), in place."""
    if not isinstance(cfg, dict):
        return
    from mmguard.models.threat import threat_model

    victims = {v.get("label"): {**v, "name": v.get("model")} for v in cfg.get("victims") or [] if isinstance(v, dict)}
    attacks = {a.get("label"): a.get("surrogates") or [] for a in cfg.get("attacks") or [] if isinstance(a, dict)}
    for r in rows:
        v, surrogates = victims.get(r.get("victim")), attacks.get(r.get("attack"))
        if r.get("attack") not in REFERENCE_ROWS and not r.get("threat_model") and v and surrogates:
            if all(isinstance(s, dict) and s.get("seed") is not None for s in surrogates) and v.get("seed") is not None:
                r["threat_model"] = threat_model(surrogates, v)


def row_threat(row: Dict[str, Any]) -> Optional[str]:
    """A row's threat model as the run decided it from the models' weights; for a row without one (and no recipe
    to read it from), black-box when its surrogates' families all differ from the victim's, else "unknown"
    (names alone cannot tell white- from gray-box)."""
    if row.get("attack") in REFERENCE_ROWS:
        return None
    if row.get("threat_model"):
        return str(row["threat_model"])
    from mmguard.models.threat import model_family

    family = model_family(victim_model(str(row.get("victim", ""))))
    families = [model_family(str(s)) for s in row.get("surrogates") or []]
    known = family is not None and families and None not in families
    return "black-box" if known and family not in families else "unknown"


# ------------------------------------------------------------------------------------------- numbers
def _ordered(values) -> List[Any]:
    return list(dict.fromkeys(values))


def _mean(values: Sequence[float]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def attack_labels(rows: Sequence[Dict[str, Any]]) -> List[str]:
    return [a for a in _ordered(r.get("attack") for r in rows) if a not in REFERENCE_ROWS]


def probes_of(rows: Sequence[Dict[str, Any]]) -> List[str]:
    return _ordered(r.get("probe") for r in rows if r.get("attack") != "zero_shot")


def mean_delta(rows: Sequence[Dict[str, Any]], attack: str, probe: str) -> Optional[float]:
    return _mean([r.get("delta_acc") for r in rows if r.get("attack") == attack and r.get("probe") == probe])


def protection_left(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One plain sentence per probe: how much delta_acc the best attack under that probe keeps of what it had
    without a probe (probe ``none``). delta_acc is averaged over victims when there are several."""
    attacks = attack_labels(rows)
    if not attacks:
        return ["No attack was run, so there is no protection to measure."]
    victims = _ordered(r.get("victim") for r in rows if r.get("attack") in attacks)
    lines = []
    for probe in probes_of(rows):
        deltas = {a: mean_delta(rows, a, probe) for a in attacks}
        deltas = {a: d for a, d in deltas.items() if d is not None}
        if not deltas:
            continue
        best = max(deltas, key=lambda a: deltas[a])
        d = deltas[best]
        ref = mean_delta(rows, best, "none")
        if probe == "none":
            lines.append(f"Without a probe (the data fine-tuned as released), the strongest protection is {best} "
                         f"with delta_acc {d:.2f}.")
        elif ref is None:
            lines.append(f"Under {probe}, the strongest protection is {best} with delta_acc {d:.2f}; the run has no "
                         f"unprobed ('none') row to compare with.")
        elif ref <= 0:
            lines.append(f"Under {probe}, {best} has delta_acc {d:.2f}; without a probe it had {ref:.2f}, so there "
                         f"was no protection to keep.")
        elif d > ref:
            lines.append(f"Under {probe}, {best} has delta_acc {d:.2f}, more than its {ref:.2f} without a probe.")
        else:
            lines.append(f"Under {probe}, {best} keeps {d:.2f} of its {ref:.2f} delta_acc ({d / ref:.0%} left).")
    if len(victims) > 1 and lines:
        lines.append(f"delta_acc is averaged over the {len(victims)} victims ({', '.join(map(str, victims))}).")
    return lines


def mix_fractions(cfg: Any) -> Dict[str, float]:
    """Probe label -> protected fraction, for the recipe's mix probes and its unprobed ``none`` (fraction 1: the
    release as it is); empty without a recipe."""
    out: Dict[str, float] = {}
    probes = (cfg.get("probes") or []) if isinstance(cfg, dict) else []
    for p in ({"name": p} if isinstance(p, str) else p for p in probes):
        if isinstance(p, dict) and p.get("name") == "mix":
            out[str(p.get("label", "mix"))] = float(p.get("fraction", 0.5))
        elif isinstance(p, dict) and p.get("name") == "none":
            out[str(p.get("label", "none"))] = 1.0
    if any(f == 1.0 for label, f in out.items() if label != "none"):
        out.pop("none", None)  # a mix of fraction 1 stands for it
    return out


def mix_curve(rows: Sequence[Dict[str, Any]], cfg: Any) -> Optional[Dict[str, Any]]:
    """delta_acc against the protected fraction, per victim and attack, over the recipe's mix probes (and
    ``none`` as fraction 1 unless a mix has it): mean and sample std over seeds at each fraction. None when the
    recipe has fewer than two such fractions."""
    from mmguard.metrics.table import mean_std

    fractions = mix_fractions(cfg)
    if len(set(fractions.values())) < 2:
        return None
    curves = []
    for victim in _ordered(r.get("victim") for r in rows if r.get("attack") not in REFERENCE_ROWS):
        for attack in attack_labels(rows):
            points = []
            for label, fraction in sorted(fractions.items(), key=lambda kv: kv[1]):
                cell = [r for r in rows
                        if (r.get("attack"), r.get("victim"), r.get("probe")) == (attack, victim, label)]
                delta, std = mean_std([r.get("delta_acc") for r in cell])
                if delta is not None:
                    points.append({"fraction": fraction, "probe": label, "delta_acc": delta, "delta_acc_std": std,
                                   "accuracy": mean_std([r.get("accuracy") for r in cell])[0],
                                   "n": sum(r.get("delta_acc") is not None for r in cell)})
            if points:
                curves.append({"attack": attack, "victim": victim, "points": points})
    if not curves:
        return None
    return {"x": "protected fraction (mix: the rest replaced by clean samples)",
            "y": "delta_acc (clean accuracy minus protected accuracy, same victim and probe)", "curves": curves}


def stealth_rows(run: RunData, trigger_tokens: Optional[Dict[str, Tuple[float, int]]] = None) -> List[Dict]:
    """One row per attack (protected set): PSNR, SSIM, the largest L-inf in /255, trigger length, text stealth.
    ``trigger_tokens``: attack label -> (mean, max) trigger length in surrogate tokens, where known."""
    out = []
    labels = [a.label for a in run.attacks]
    by_label = {a.label: a for a in run.attacks}
    # attacks in results.json whose folder is gone still get a row, from their results rows
    for label in attack_labels(run.rows):
        if label not in by_label:
            labels.append(label)
    for label in labels:
        a = by_label.get(label)
        rows = [r for r in run.rows if r.get("attack") == label]
        summary = (a.manifest.get("summary") or {}) if a else {}
        samples = a.per_sample if a else []
        psnr = summary.get("psnr", _mean([r.get("psnr") for r in rows]))
        ssim = summary.get("ssim", _mean([r.get("ssim") for r in rows]))
        linf = summary.get("linf_max_255")
        if linf is None and samples:
            linf = max(int(s.get("linf_255") or 0) for s in samples)
        triggers = [s.get("trigger") or "" for s in samples]
        words = [len(t.split()) for t in triggers]
        hp = (a.manifest.get("hyperparameters") or {}) if a else {}
        eps_x = hp.get("eps_x")
        tok = (trigger_tokens or {}).get(label)
        out.append({
            "attack": label, "method": a.name if a else (rows[0].get("attack") if rows else label),
            "surrogates": ", ".join((a.manifest.get("surrogates") if a else rows[0].get("surrogates") if rows else [])
                                    or []),
            "psnr": psnr, "ssim": ssim, "linf_255": linf,
            "eps_x_255": round(eps_x * 255, 2) if isinstance(eps_x, (int, float)) else None,
            "trigger_words": _mean(words) if any(triggers) else None,
            "trigger_tokens_mean": tok[0] if tok else None, "trigger_tokens_max": tok[1] if tok else None,
            "eps_t": hp.get("eps_t") if any(triggers) else None,
            "edit_distance": summary.get("edit_distance"), "bleu": summary.get("bleu"),
            "n": summary.get("n", len(samples) or None),
            "missing": None if a else "no protected/ folder in the run directory",
        })
    return out


# ------------------------------------------------------------------------------------------- questions
def inserted_span(clean: str, protected: str) -> Tuple[int, int]:
    """(start, end) in ``protected`` of the text inserted into ``clean`` (the trigger); (0, 0) when the texts
    are equal. Insertions only, as triggers never replace; a general difference takes its widest span."""
    if clean == protected:
        return 0, 0
    pre = 0
    while pre < min(len(clean), len(protected)) and clean[pre] == protected[pre]:
        pre += 1
    suf = 0
    while suf < min(len(clean), len(protected)) - pre and clean[-1 - suf] == protected[-1 - suf]:
        suf += 1
    end = len(protected) - suf
    if end <= pre:  # text removed rather than inserted: mark what differs
        ops = [op for op in difflib.SequenceMatcher(a=clean, b=protected).get_opcodes() if op[0] != "equal"]
        if not ops:
            return 0, 0
        return ops[0][3], ops[-1][4]
    return pre, end


def locate_trigger(question: str, trigger: Optional[str]) -> Tuple[int, int]:
    """Where the manifest's trigger sits in a released question (the last occurrence); (0, 0) if absent."""
    if not trigger or trigger not in question:
        return 0, 0
    start = question.rfind(trigger)
    return start, start + len(trigger)
