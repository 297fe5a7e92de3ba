"""Aligning ``effnet-gemma3-270m`` in LLaVA's two stages, on this CPU, through the engine's own fine-tuning.

Stage 1 (feature alignment): only the projector trains, on pictures and their captions. Stage 2 (visual
instruction tuning): the projector and LoRA on Gemma train on short questions about the same pictures (what is
it, what kind of thing) and about synthetic scenes (colour, shape). No digits, letters or numerals are shown:
handwritten digits stay a domain the aligned model does not know, where the paper's regime (LoRA fine-tuning of
a pre-trained LVLM on a new domain) is measured.

Deterministic (seeded data order, Lightning's deterministic mode on CPU), resumable (a Lightning checkpoint per
stage at every epoch's end, under the cache), with a progress bar. The result -- projector and LoRA factors as
safetensors, and a manifest of source hashes, data, settings, seed and the first steps' losses -- is written to
``models/aligned/effnet-gemma3-270m/`` to be committed, so that nobody else pays for it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning as L
import torch

from mmguard.config.sections import FinetuneParams, TrainerParams
from mmguard.core.io import atomic_path, atomic_write_json
from mmguard.data import pictures
from mmguard.data.synthetic import generate
from mmguard.engine.build import build_victim
from mmguard.models import effnet_gemma3, weights
from mmguard.models.zoo import cache_dir

SETTINGS: Dict[str, Any] = {
    "seed": 0,
    "stage1": {"epochs": 2, "lr": 1e-3, "batch_size": 16, "warmup_ratio": 0.05, "synthetic": 400},
    "stage2": {"epochs": 2, "lr": 3e-4, "batch_size": 16, "warmup_ratio": 0.05, "synthetic": 600,
               "lora": {"rank": 16, "alpha": 32, "dropout": 0.0}},
    "precision": "bf16-mixed",
    "held_out": 0.05,
    "first_steps": 5,
}


class FirstLosses(L.Callback):
    """The training loss of the first ``n`` steps: the fingerprint a short re-run must reproduce. ``stop``: end
    the fit after them (the short re-run), leaving the learning-rate schedule that of the whole run (a Trainer's
    max_steps would shorten the schedule and change every step after the first)."""

    def __init__(self, n: int, stop: bool = False):
        self.n, self.stop, self.losses = n, stop, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if len(self.losses) < self.n and trainer.global_step <= self.n:  # a resumed fit is past its first steps
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(round(float(loss), 4))
        if self.stop and len(self.losses) >= self.n:
            trainer.should_stop = True


def alignment_data(root: Path, settings: Dict[str, Any]) -> Dict[str, List]:
    """The two stages' training sets and held-out questions, drawn with the settings' seed."""
    entries = pictures.stamps(root) + pictures.emoji(root)
    rng = random.Random(settings["seed"])
    rng.shuffle(entries)
    n_held = max(1, int(len(entries) * settings["held_out"]))
    held, train = entries[:n_held], entries[n_held:]
    seed = settings["seed"]
    stage1 = pictures.caption_samples(train, "cap") + generate(settings["stage1"]["synthetic"], seed=30_000 + seed,
                                                                 types=("caption",), size=64, prefix="syncap")
    stage2 = pictures.vqa_samples(train, "vqa") + generate(settings["stage2"]["synthetic"], seed=40_000 + seed,
                                                             types=("colour", "shape"), size=64, prefix="synvqa")
    return {"stage1": stage1, "stage2": stage2, "held_out": pictures.vqa_samples(held, "held"),
            "counts": {"pictures": len(entries), "held_out_pictures": n_held}}


def _params(stage: Dict[str, Any], precision: str) -> FinetuneParams:
    return FinetuneParams(epochs=stage["epochs"], lr=stage["lr"], batch_size=stage["batch_size"],
                          warmup_ratio=stage["warmup_ratio"], precision=precision)


def settings_key(settings: Dict[str, Any]) -> str:
    blob = json.dumps({"settings": settings, "sources": weights.source_hashes()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def align_model(name: str, progress: bool = True) -> Dict[str, Any]:
    """Align the registered model ``name`` at its own seed into its folder under ``models/aligned/``."""
    seed = effnet_gemma3.ALIGNMENTS[name]
    return align(effnet_gemma3.aligned_dir(name), {**SETTINGS, "seed": seed}, progress=progress, name=name)


def align(out: Path = effnet_gemma3.ALIGNED_DIR, settings: Optional[Dict[str, Any]] = None, progress: bool = True,
          pictures_root: Optional[Path] = None, max_steps: Optional[int] = None,
          name: str = effnet_gemma3.NAME) -> Dict[str, Any]:
    """Run both stages and write projector, LoRA and manifest to ``out`` (``name``: the model it becomes). ``max_steps`` (tests): stop each stage
    after its first that many steps (at most the settings' first_steps), write nothing, and return the losses
    (stage 1's are the whole run's; stage 2 then starts from a projector trained for those steps only)."""
    from mmguard.engine.finetune import evaluate, finetune

    s = settings or SETTINGS
    root = pictures.fetch_pictures(pictures_root or cache_dir() / "pictures")
    data = alignment_data(root, s)
    work = cache_dir() / "align" / settings_key(s)
    trainer = TrainerParams(progress_bar=progress)
    adapter = effnet_gemma3.build(seed=s["seed"], pretrained=False)
    before = None if max_steps else evaluate(adapter, data["held_out"], trainer=trainer)["accuracy"]
    started, record = time.time(), {}
    lora = s["stage2"]["lora"]
    for stage, victim in (("stage1", build_victim("projector")),
                          ("stage2", build_victim("projector_lora", rank=lora["rank"], alpha=lora["alpha"],
                                                  dropout=lora["dropout"]))):
        first = FirstLosses(min(max_steps, s["first_steps"]) if max_steps else s["first_steps"], stop=bool(max_steps))
        params = _params(s[stage], s["precision"])
        finetune(adapter, victim, params, data[stage], seed=s["seed"], trainer=trainer, callbacks=[first],
                 checkpoint_dir=None if max_steps else work / stage)
        if not max_steps:  # kept beside the stage's checkpoint: a resumed stage never sees its first steps again
            saved = work / stage / "first_losses.json"
            if len(first.losses) == s["first_steps"]:
                atomic_write_json(saved, first.losses)
            first.losses = json.loads(saved.read_text())
        record[stage] = {**s[stage], "samples": len(data[stage]), "first_losses": first.losses}
    if max_steps:
        return record
    after = evaluate(adapter, data["held_out"], trainer=trainer)
    projector = {k: v.detach().float().contiguous() for k, v in
                 adapter.model.model.multi_modal_projector.state_dict().items()}
    lora_state = {k: v.detach().float().contiguous() for k, v in adapter.model.state_dict().items() if "lora_" in k}
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "projector.safetensors") as tmp:
        save_file(projector, str(tmp))
    with atomic_path(out / "lora.safetensors") as tmp:
        save_file(lora_state, str(tmp))
    manifest = {
        "model": name, "seed": s["seed"], "settings": s, "sources": weights.source_hashes(),
        "sources_note": "Gemma 3 270M de-quantized from Q4_K_M (not Google's bf16 weights)",
        "data": {**data["counts"], "packages": list(pictures.PACKAGES), "excluded_stamps": list(pictures.EXCLUDED_STAMPS),
                 "stage1_samples": len(data["stage1"]), "stage2_samples": len(data["stage2"])},
        "stage1": record["stage1"], "stage2": {**record["stage2"], "lora": lora},
        "held_out_accuracy": {"before": round(before, 4), "after": round(after["accuracy"], 4),
                              "questions": len(data["held_out"])},
        "wall_s": round(time.time() - started, 1), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest

