"""Answer-to-image attention on clean and protected inputs: the binding the MMGuard losses disrupt, made visible.

For one sample, the surrogate encodes it (spans X, T, G, Y), and the attention tap records the rows of the
answer tokens Y in the first language-model layer. Averaged over heads and answer tokens, the probability mass
on each image token X is painted back onto the raw image through the adapter's ``patch_boxes`` (the region each
image token covers), so families with tiles or odd grids map correctly; where that is not available, a square
grid is assumed. The protected input is the released image with the manifest's trigger inserted, as the
fine-tuner's model reads it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mmguard.data.sample import Sample


@dataclasses.dataclass
class AttentionMap:
    """Mean answer-token attention of one input in one layer."""

    heat: np.ndarray  # (h, w) mass per image position, NaN where no image token covers it
    image_mass: float  # total attention mass of the answer rows on image tokens X (0..1)
    trigger_mass: Optional[float]  # ... on trigger tokens G (None without a trigger)
    tokens: int  # number of image tokens X
    mapped: str  # "patch boxes" or "square grid" or "strip"


def surrogate_spec(recipe, attack_label: str, manifest: Dict[str, Any]) -> Dict[str, Any]:
    """The first surrogate of an attack as it was protected: the run's resolved recipe.yaml names it (every
    surrogate written out with its seed); without a recipe, the manifest's surrogate names at its seed."""
    attacks = (recipe or {}).get("attacks") or []
    attack = next((a for a in attacks if a.get("label") == attack_label), None)
    if attack is not None and attack.get("surrogates"):
        first = attack["surrogates"][0]
        return {"name": first["name"], "seed": int(first.get("seed") or 0), "pretrained": bool(first.get("pretrained")),
                "ensemble": len(attack["surrogates"])}
    names = manifest.get("surrogates") or []
    if not names:
        raise ValueError(f"attack '{attack_label}': neither the recipe nor the manifest names a surrogate")
    seed = (manifest.get("hyperparameters") or {}).get("seed", manifest.get("seed", 0))
    return {"name": names[0], "seed": int(seed or 0), "pretrained": True, "ensemble": len(names)}


class SurrogateCache:
    """Builds each surrogate once per report (attacks usually share theirs); a failure is remembered. A tiny
    model's pre-trained twin is read from the cache, never trained here."""

    def __init__(self):
        self._built: Dict[Tuple, Any] = {}

    def get(self, spec: Dict[str, Any]):
        key = (spec["name"], spec["seed"], spec["pretrained"])
        if key not in self._built:
            try:
                from mmguard.config.spec import ModelSpec
                from mmguard.engine.build import build_model

                adapter = build_model(ModelSpec(spec["name"], pretrained=spec["pretrained"], seed=spec["seed"]),
                                      train=False)
                adapter.model.eval()
                self._built[key] = adapter
            except Exception as err:  # noqa: BLE001 - the report says why instead of crashing
                self._built[key] = err
        value = self._built[key]
        if isinstance(value, BaseException):
            raise RuntimeError(f"could not build surrogate {spec['name']} (seed {spec['seed']}, "
                               f"pretrained={spec['pretrained']}): {type(value).__name__}: {value}") from value
        return value


def _grid(adapter, values: torch.Tensor, layout: Any, size: Tuple[int, int]) -> Tuple[np.ndarray, str]:
    """Paint per-token values onto an (h, w) canvas of the raw image; overlapping tokens (tiles plus a global
    view) are averaged."""
    n = int(values.numel())
    v = values.detach().float().cpu().numpy()
    try:
        boxes = adapter.patch_boxes(layout)
        boxes = boxes.detach().float().cpu().numpy() if torch.is_tensor(boxes) else np.asarray(boxes, dtype=float)
        if boxes.shape != (n, 4):
            raise ValueError(f"patch_boxes gave {tuple(boxes.shape)} for {n} image tokens")
        w, h = size
        scale = min(1.0, 128.0 / max(h, w))
        ch, cw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        total = np.zeros((ch, cw))
        count = np.zeros((ch, cw))
        for (y0, x0, y1, x1), val in zip(boxes, v):
            r0 = min(ch - 1, max(0, int(math.floor(y0 * ch))))
            c0 = min(cw - 1, max(0, int(math.floor(x0 * cw))))
            r1 = max(r0 + 1, min(ch, int(math.ceil(y1 * ch))))
            c1 = max(c0 + 1, min(cw, int(math.ceil(x1 * cw))))
            total[r0:r1, c0:c1] += val
            count[r0:r1, c0:c1] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            heat = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return heat, "patch boxes"
    except Exception:  # noqa: BLE001 - fall back on the geometry of a square grid
        side = int(round(math.sqrt(n)))
        if side * side == n and n > 0:
            return v.reshape(side, side), "square grid"
        return v.reshape(1, max(n, 1)) if n else np.full((1, 1), np.nan), "strip"


@torch.no_grad()
def answer_attention(adapter, sample: Sample, trigger: Optional[str] = None, layer: int = 0,
                     trigger_at: Optional[int] = None) -> AttentionMap:
    """Attention of the answer tokens Y on the image tokens X in language-model layer ``layer``."""
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        enc = adapter.encode(sample, trigger=trigger, trigger_at=trigger_at)
        x, g, y = enc.spans["X"], enc.spans["G"], enc.spans["Y"]
        if y.numel() == 0:
            raise ValueError(f"sample {sample.id!r}: the answer encodes to no tokens")
        batch = adapter.to_device(adapter.collate([enc], [sample.pixels()]))
        layers = [min(layer, len(adapter.attention_modules) - 1)]
        with adapter.attention_rows(layers, [y]) as taps:
            adapter.forward(batch)
        probs = taps[layers[0]].probs[0].float().cpu()  # (heads, |Y|, keys)
    finally:
        adapter.model.train(was_training)
    rows = probs.mean(0)  # (|Y|, keys): mean over heads
    on_x = rows[:, x] if x.numel() else rows[:, :0]
    heat, mapped = _grid(adapter, on_x.mean(0), enc.layout, sample.pil.size)
    trigger_mass = float(rows[:, g].sum(-1).mean()) if g.numel() else None
    return AttentionMap(heat, float(on_x.sum(-1).mean()), trigger_mass, int(x.numel()), mapped)


def trigger_token_lengths(adapter, pairs: Sequence[Tuple[Optional[Sample], Optional[str], Optional[int]]]
                          ) -> Optional[Tuple[float, int]]:
    """(mean, max) length of the triggers in the surrogate's tokens: the trigger span G of the encoded sample
    (what the budget eps_t counts), or the trigger tokenized alone where the clean sample is not at hand. None
    without triggers."""
    lengths: List[int] = []
    for sample, trigger, at in pairs:
        if not trigger:
            continue
        n = None
        if sample is not None:
            try:
                n = int(adapter.encode(sample, trigger=trigger, with_answer=False, trigger_at=at).spans["G"].numel())
            except Exception:  # noqa: BLE001
                n = None
        if n is None:
            n = len(adapter.tokenizer(trigger, add_special_tokens=False).input_ids)
        lengths.append(n)
    if not lengths:
        return None
    return sum(lengths) / len(lengths), max(lengths)
