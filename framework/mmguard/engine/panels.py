"""What the W&B group summary run of a run folder holds: the table of every results row, per attack an image
panel (clean, protected, amplified perturbation, the triggered question) read from the protected set folders
(``protected/<label>/``: data.json, images/, manifest.json with the per-sample triggers), report.html, and
summary means (``delta_acc`` over the attack rows is what a W&B sweep maximizes)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from mmguard.config.flatten import REFERENCE_ROWS
from mmguard.data.sample import Sample
from mmguard.metrics.table import COLUMNS

SAMPLE_COLUMNS = ("attack", "id", "clean", "protected", "perturbation", "question", "trigger", "answer")


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, sort_keys=True)


def rows_table(rows: Sequence[Mapping[str, Any]]):
    """Every results row, the results.json columns first, then any extra field of any row."""
    import wandb

    columns = list(COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    return wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(np.mean(vals)) if vals else None


def summary_means(rows: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    """``delta_acc``: the mean over every attack row (all victims and probes); per row label ``accuracy/<label>``
    and ``delta_acc/<label>``."""
    out: Dict[str, float] = {}
    overall = _mean([r.get("delta_acc") for r in rows if r.get("attack") not in REFERENCE_ROWS])
    if overall is not None:
        out["delta_acc"] = overall
    for label in dict.fromkeys(r.get("attack") for r in rows):
        for key in ("accuracy", "delta_acc"):
            value = _mean([r.get(key) for r in rows if r.get("attack") == label])
            if value is not None:
                out[f"{key}/{label}"] = value
    return out


def _hwc(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def attack_panel(folder: Path, clean: Mapping[str, Sample], samples: int) -> List[Dict[str, Any]]:
    """The first ``samples`` samples of a protected set: clean and protected images, the perturbation scaled
    so that the largest |delta| shown reaches the ends of [0, 1] (0.5 is no change), the released question."""
    from mmguard.data.loaders import read_conversation_file

    manifest = json.loads((folder / "manifest.json").read_text())
    released = {s.id: s for s in read_conversation_file(folder / "data.json")}
    per_sample = [s for s in manifest.get("samples") or [] if str(s["id"]) in released][:max(0, samples)]
    items = []
    for s in per_sample:
        sid = str(s["id"])
        protected = released[sid].pil
        original = clean[sid].pil if sid in clean else None
        delta = None
        if original is not None and original.size == protected.size:
            delta = _hwc(protected) - _hwc(original)
        items.append({"id": sid, "clean": original, "protected": protected, "delta": delta,
                      "question": released[sid].question, "trigger": s.get("trigger"),
                      "answer": released[sid].answer})
    peak = max([float(np.abs(it["delta"]).max()) for it in items if it["delta"] is not None] or [0.0])
    scale = 0.5 / peak if peak > 0 else 1.0
    for it in items:
        if it["delta"] is not None:
            it["delta"] = (np.clip(it["delta"] * scale + 0.5, 0, 1) * 255).round().astype(np.uint8)
        it["scale"] = scale
    return items


def _attack_folders(protected: Path, rows: Sequence[Mapping[str, Any]]) -> List[Path]:
    if not protected.is_dir():
        return []
    order = {label: i for i, label in enumerate(dict.fromkeys(r.get("attack") for r in rows))}
    found = [p for p in protected.iterdir() if p.is_dir() and not p.name.startswith(".")
             and (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: (order.get(p.name, len(order)), p.name))


def log_group(experiment, results: Mapping[str, Any], protected: Path, clean: Any = (),
              report: Optional[str | Path] = None, samples: int = 4) -> None:
    import wandb

    rows = list(results.get("rows") or [])
    clean_by_id = dict(clean) if isinstance(clean, Mapping) else {s.id: s for s in clean}
    payload: Dict[str, Any] = {"results": rows_table(rows)}
    table = wandb.Table(columns=list(SAMPLE_COLUMNS))
    for folder in _attack_folders(protected, rows):
        panel = []
        for it in attack_panel(folder, clean_by_id, samples):
            caption = f"{it['id']}: {it['question']} -> {it['answer']}"
            images = [wandb.Image(it["clean"], caption=f"{it['id']} clean") if it["clean"] is not None else None,
                      wandb.Image(it["protected"], caption=caption),
                      wandb.Image(it["delta"], caption=f"{it['id']} perturbation x{it['scale']:.0f} + 0.5")
                      if it["delta"] is not None else None]
            panel += [im for im in images if im is not None]
            table.add_data(folder.name, it["id"], *images, it["question"], it["trigger"], it["answer"])
        if panel:
            payload[f"panel/{folder.name}"] = panel
    payload["samples"] = table
    if report is not None and Path(report).is_file():
        payload["report"] = wandb.Html(Path(report).read_text(encoding="utf-8"), inject=False)
    experiment.log(payload)
    experiment.summary.update({"rows": len(rows), **summary_means(rows)})
