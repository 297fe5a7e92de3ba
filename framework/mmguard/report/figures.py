"""The report's figures as PNG files (matplotlib, no display needed): image grids, attention maps and accuracy
charts. Each function writes one file and returns its path."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmguard.report.summary import REFERENCE_ROWS, attack_labels, probes_of, row_threat
from mmguard.metrics.table import mean_std

DPI = 110
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", str(text)).strip("._") or "_"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    from mmguard.core.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return path


def _hwc(img) -> np.ndarray:
    """(3, H, W) tensor or PIL image -> (H, W, 3) float array in [0, 1]."""
    if hasattr(img, "detach"):
        return img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(path: Path, title: str, items: Sequence[Dict], scale: Optional[float] = None) -> Path:
    """Rows of (clean, protected, amplified perturbation) for the shown samples. ``items``: dicts with ``id``,
    ``protected`` (PIL), ``clean`` (PIL or None). The perturbation is shown as ``delta * scale + 0.5``; by default
    ``scale`` makes the largest |delta| shown reach the ends of the range."""
    deltas = []
    for it in items:
        p = _hwc(it["protected"])
        c = _hwc(it["clean"]) if it.get("clean") is not None else None
        deltas.append(p - c if c is not None and c.shape == p.shape else None)
    peak = max([float(np.abs(d).max()) for d in deltas if d is not None] or [0.0])
    if scale is None:
        scale = 0.5 / peak if peak > 0 else 1.0
    cols = ["clean", "protected", f"perturbation x{scale:.0f} + 0.5"]
    fig = _figure(2.0 * len(cols), 2.0 * max(1, len(items)) + 0.4)
    axes = fig.subplots(max(1, len(items)), len(cols), squeeze=False)
    for i, (it, d) in enumerate(zip(items, deltas)):
        row = axes[i]
        if it.get("clean") is not None:
            row[0].imshow(_hwc(it["clean"]), interpolation="nearest")
        else:
            row[0].text(0.5, 0.5, "clean original\nnot available", ha="center", va="center", fontsize=8)
        row[1].imshow(_hwc(it["protected"]), interpolation="nearest")
        if d is not None:
            row[2].imshow(np.clip(d * scale + 0.5, 0, 1), interpolation="nearest")
            linf = float(np.abs(d).max()) * 255
            row[2].set_xlabel(f"L-inf {linf:.0f}/255", fontsize=8)
        else:
            row[2].text(0.5, 0.5, "-", ha="center", va="center")
        row[0].set_ylabel(str(it["id"]), fontsize=8)
        for j, ax in enumerate(row):
            _off(ax)
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    if peak == 0:
        fig.suptitle(f"{title} (no image perturbation)", fontsize=10)
    else:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def attention_figure(path: Path, title: str, items: Sequence[Dict]) -> Path:
    """Rows of answer-to-image attention heatmaps over the clean and the protected input, and their difference.
    ``items``: dicts with ``id``, ``clean_image``/``protected_image`` (PIL or None) and ``clean``/``protected``
    (:class:`~mmguard.report.attention.AttentionMap` or None)."""
    cols = ["clean input", "protected input", "protected - clean"]
    fig = _figure(2.3 * len(cols), 2.2 * max(1, len(items)) + 0.5)
    axes = fig.subplots(max(1, len(items)), len(cols), squeeze=False)
    for i, it in enumerate(items):
        maps = [it.get("clean"), it.get("protected")]
        vmax = max([float(np.nanmax(m.heat)) for m in maps if m is not None and np.isfinite(m.heat).any()]
                   or [1.0]) or 1.0
        for j, (m, img) in enumerate(zip(maps, [it.get("clean_image"), it.get("protected_image")])):
            ax = axes[i][j]
            if m is None:
                ax.text(0.5, 0.5, "not available", ha="center", va="center", fontsize=8)
            else:
                h, w = m.heat.shape
                if img is not None:
                    ax.imshow(_hwc(img).mean(-1), cmap="gray", extent=(0, w, h, 0), interpolation="nearest")
                im = ax.imshow(m.heat, cmap="magma", vmin=0, vmax=vmax, alpha=0.75 if img is not None else 1.0,
                               extent=(0, w, h, 0), interpolation="nearest")
                label = f"on image {m.image_mass:.2f}"
                if m.trigger_mass is not None:
                    label += f", trigger {m.trigger_mass:.2f}"
                ax.set_xlabel(label, fontsize=8)
                if j == 1:
                    fig.colorbar(im, ax=axes[i][:2].tolist(), shrink=0.8, fraction=0.05)
        ax = axes[i][2]
        c, p = maps
        if c is not None and p is not None and c.heat.shape == p.heat.shape:
            diff = p.heat - c.heat
            lim = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0
            lim = max(lim, 0.05 * vmax)  # changes far below the maps' own scale stay white, not amplified noise
            im = ax.imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_xlabel(f"change in image mass {p.image_mass - c.image_mass:+.2f}", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8, fraction=0.05)
        else:
            ax.text(0.5, 0.5, "-", ha="center", va="center")
        axes[i][0].set_ylabel(str(it["id"]), fontsize=8)
        for j in range(len(cols)):
            _off(axes[i][j])
            if i == 0:
                axes[i][j].set_title(cols[j], fontsize=9)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _colours(labels: Sequence[str]) -> Dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    out, k = {}, 0
    for a in labels:
        if a == "zero_shot":
            out[a] = "#b0b0b0"
        elif a == "clean":
            out[a] = "#404040"
        else:
            out[a] = cmap(k % 10)
            k += 1
    return out


def _bars(ax, groups: Sequence[str], series: Dict[str, List[Optional[float]]], colours: Dict[str, str],
          legend: Dict[str, str], errors: Optional[Dict[str, List[Optional[float]]]] = None) -> None:
    """One bar per series in each group; ``errors``: a standard deviation per bar (over seeds), drawn as a
    whisker."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        err = [0.0 if e is None else e for e in (errors or {}).get(name, [None] * len(values))]
        bars = ax.bar(x - 0.4 + width * (k + 0.5), vals, width, color=colours[name], label=legend.get(name, name),
                      hatch="//" if name == "zero_shot" else None, edgecolor="white", linewidth=0.5,
                      yerr=err if any(err) else None, error_kw={"elinewidth": 0.8, "capsize": 2})
        for b, v in zip(bars, values):
            if v is not None:
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                            fontsize=6, rotation=90 if n > 6 else 0, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy (clean test set)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _mean(values) -> Optional[float]:
    return mean_std(list(values))[0]


def _std(values) -> Optional[float]:
    return mean_std(list(values))[1]


def accuracy_by_probe(path: Path, rows: Sequence[Dict], victim: str) -> Path:
    """One victim: a group of bars per probe, one bar per attack (zero_shot, the same in every group since it
    has no fine-tuning, and clean included); the legend names each attack's threat model for this victim."""
    rows = [r for r in rows if r.get("victim") == victim]
    probes = probes_of(rows) or ["none"]
    names = [a for a in REFERENCE_ROWS if any(r.get("attack") == a for r in rows)] + attack_labels(rows)
    series, errors, legend = {}, {}, {}
    zero = [r.get("accuracy") for r in rows if r.get("attack") == "zero_shot"]
    for a in names:
        if a == "zero_shot":
            series[a], errors[a] = [_mean(zero)] * len(probes), [_std(zero)] * len(probes)
            legend[a] = "zero_shot (no fine-tuning)"
            continue
        cells = [[r.get("accuracy") for r in rows if r.get("attack") == a and r.get("probe") == p] for p in probes]
        series[a], errors[a] = [_mean(c) for c in cells], [_std(c) for c in cells]
        threat = next((row_threat(r) for r in rows if r.get("attack") == a), None)
        legend[a] = f"{a} ({threat})" if threat else a
    seeds = sorted({r["seed"] for r in rows if r.get("seed") is not None})
    title = f"victim {victim}" + (f" (mean and std over seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else "")
    return _grouped_bars(path, probes, series, names, legend, "probe (what the fine-tuner does to the training data)",
                         title, errors)


def accuracy_by_threat(path: Path, rows: Sequence[Dict], probe: str = "none") -> Path:
    """A group of bars per threat model (white-box, gray-box, black-box, from each row's surrogates and victim),
    one bar per attack, accuracy under ``probe`` averaged over the victims in that group; clean and zero_shot
    are averaged over the same victims."""
    order = ["white-box", "gray-box", "black-box", "unknown"]
    attacks = attack_labels(rows)
    rows_p = [r for r in rows if r.get("probe") == probe or r.get("attack") == "zero_shot"]
    groups = [t for t in order if any(row_threat(r) == t for r in rows_p)] or ["(no attack)"]
    names = [a for a in REFERENCE_ROWS if any(r.get("attack") == a for r in rows_p)] + attacks
    series: Dict[str, List[Optional[float]]] = {a: [] for a in names}
    for g in groups:
        victims = {r.get("victim") for r in rows_p if row_threat(r) == g} if g != "(no attack)" else \
            {r.get("victim") for r in rows_p}
        for a in names:
            sel = [r for r in rows_p if r.get("attack") == a and r.get("victim") in victims]
            if a not in REFERENCE_ROWS:
                sel = [r for r in sel if row_threat(r) == g]
            series[a].append(_mean(r.get("accuracy") for r in sel))
    legend = {"zero_shot": "zero_shot (no fine-tuning)"}
    return _grouped_bars(path, groups, series, names, legend, "threat model (victim vs. the attack's surrogates)",
                         f"accuracy by threat model, probe '{probe}' (mean over victims)")


def _grouped_bars(path: Path, groups: Sequence[str], series: Dict[str, List[Optional[float]]],
                  names: Sequence[str], legend: Dict[str, str], xlabel: str, title: str,
                  errors: Optional[Dict[str, List[Optional[float]]]] = None) -> Path:
    fig = _figure(max(5.0, 1.2 + 0.35 * len(groups) * len(names)) + 2.0, 3.4)
    ax = fig.subplots()
    _bars(ax, groups, series, _colours(names), legend, errors)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def mix_curve_figure(path: Path, curve: Dict) -> Path:
    """Protection left against the protected fraction (``summary.mix_curve``): one panel per victim, a line per
    attack with the std over seeds as whiskers."""
    victims = list(dict.fromkeys(c["victim"] for c in curve["curves"]))
    fig = _figure(4.2 * len(victims) + 1.8, 3.4)
    axes = fig.subplots(1, len(victims), squeeze=False)[0]
    colours = _colours(list(dict.fromkeys(c["attack"] for c in curve["curves"])))
    for ax, victim in zip(axes, victims):
        for c in (c for c in curve["curves"] if c["victim"] == victim):
            pts = c["points"]
            ax.errorbar([p["fraction"] for p in pts], [p["delta_acc"] for p in pts],
                        yerr=[p["delta_acc_std"] or 0.0 for p in pts], marker="o", markersize=3, capsize=2,
                        linewidth=1.2, color=colours[c["attack"]], label=c["attack"])
        ax.axhline(0.0, color="#999999", linewidth=0.8)
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("protected fraction of the training set")
        ax.set_ylabel("delta_acc (protection left)")
        ax.set_title(f"victim {victim}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, path)
