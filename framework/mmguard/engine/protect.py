"""Run one attack end to end: surrogates -> ProtectionModule -> released (8-bit, triggered) samples, their
stealth numbers, and a data set on disk (LLaVA JSON, ShareGPT, PNGs, manifest) that any trainer reads."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from mmguard.config.sections import TrainerParams
from mmguard.config.spec import AttackSpec
from mmguard.core.errors import UserError
from mmguard.core.io import atomic_write_json
from mmguard.core.registry import ATTACKS, PROBES
from mmguard.data.export import export_llava_json, export_sharegpt, image_filename
from mmguard.data.sample import Sample, tensor_to_pil
from mmguard.engine.finetune import DEFAULT_TRAINER, quiet_lightning
from mmguard.engine.models import build_adapter
from mmguard.engine.protection import ProtectionModule
from mmguard.engine.store import quantize_release
from mmguard.engine.trainer import build_trainer
from mmguard.metrics import stealth


@dataclasses.dataclass
class ProtectedSet:
    attack: str               # the attack's name
    label: str                # its row label in the recipe
    samples: List[Sample]
    surrogates: List[str]
    hyperparameters: Dict[str, Any]
    per_sample: List[Dict[str, Any]]
    summary: Dict[str, Any]
    history: List[Dict[str, float]]


def _ids_loader(samples: Sequence[Sample], batch_size: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader([s.id for s in samples], batch_size=batch_size, shuffle=True, generator=gen,
                      collate_fn=list, num_workers=0)


def build_protection(spec: AttackSpec, train: Sequence[Sample], surrogates: Optional[Sequence] = None
                     ) -> ProtectionModule:
    """The attack, its surrogates (built from the spec unless given) and the loop, ready to fit."""
    attack = ATTACKS.build(spec.name, **spec.params)
    surrogates = list(surrogates) if surrogates is not None else [build_adapter(s) for s in spec.surrogates]
    for adapter in surrogates:
        problem = attack.check_surrogate(adapter.name, len(adapter.attention_modules))
        if problem:
            raise UserError(f"attack '{spec.label}': {problem}")
    eot = [None if p.name == "none" else PROBES.build(p.name, **p.params) for p in spec.eot]
    return ProtectionModule(surrogates, attack, spec.loop, train, weights=spec.weights, eot=eot, seed=spec.seed)


def protect(spec: AttackSpec, train: Sequence[Sample], *, trainer: Optional[TrainerParams] = None,
            logger=False, surrogates: Optional[Sequence] = None) -> ProtectedSet:
    t0 = time.time()
    module = build_protection(spec, train, surrogates)
    rounds = spec.loop.R if module.attack.optimize else 1
    with quiet_lightning():
        lt = build_trainer(trainer or DEFAULT_TRAINER, max_epochs=rounds, logger=logger)
        lt.fit(module, train_dataloaders=_ids_loader(train, spec.loop.batch_size, spec.seed))
    released, per_sample = release(module, train)
    summary = summarize(per_sample, time.time() - t0, len(module.history))
    hyper = {**dataclasses.asdict(spec.loop), **module.attack.hyperparameters(), "weights": spec.weights,
             "seed": spec.seed}
    return ProtectedSet(spec.name, spec.label, released, [s.name for s in spec.surrogates], hyper, per_sample, summary,
                        module.history)


def release(module: ProtectionModule, train: Sequence[Sample]):
    """Quantize to 8 bits, insert triggers; per-sample L-inf, PSNR, SSIM and the trigger."""
    attack = module.attack
    out, rows = [], []
    for s in train:
        x = module.clean[s.id]
        image = quantize_release(x, module.store.get(s), module.loop.eps_x) if attack.image else x
        trigger = module.triggers[s.id]
        question = module.surrogates[0].insert_trigger(s.question, trigger)[0]
        pil = tensor_to_pil(image)
        # the trigger stays out of the released sample (it is in the owner's manifest only)
        out.append(s.replace(image=pil, question=question))
        linf = float((image - x).abs().max())
        rows.append({"id": s.id, "linf": linf, "linf_255": round(linf * 255), "trigger": trigger,
                     "psnr": float(stealth.psnr(x[None], image[None])[0]) if attack.image else None,
                     "ssim": float(stealth.ssim(x[None], image[None])[0]) if attack.image else None})
    return out, rows


def summarize(rows: List[Dict[str, Any]], seconds: float, rounds: int) -> Dict[str, Any]:
    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None and np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    return {"n": len(rows), "psnr": mean("psnr"), "ssim": mean("ssim"),
            "linf_max_255": max(r["linf_255"] for r in rows) if rows else None, "seconds": round(seconds, 1),
            "rounds": rounds}


def _sha256_png(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_protected(ps: ProtectedSet, out_dir: str | Path, seed: int, clean: Sequence[Sample] = ()) -> Path:
    """Write data.json, sharegpt.json, images/ and manifest.json. The folder is built beside the target and
    swapped in, so a run that dies leaves the old output or the new one, never a mix."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_llava_json(ps.samples, tmp, name="data.json")
        export_sharegpt(ps.samples, tmp, name="sharegpt.json")
        per_sample = [dict(r, image=f"images/{image_filename(r['id'])}",
                           sha256=_sha256_png(tmp / "images" / image_filename(r["id"]))) for r in ps.per_sample]
        text_stats = text_stealth(clean, ps.samples) if clean else {}
        manifest = {
            "attack": ps.attack, "label": ps.label, "surrogates": ps.surrogates, "seed": seed, "hyperparameters": ps.hyperparameters,
            "summary": {**ps.summary, **text_stats}, "history": ps.history, "samples": per_sample,
            "lpips": None, "lpips_reason": stealth.lpips_unavailable_reason(),
            "versions": versions(),
        }
        atomic_write_json(tmp / "manifest.json", manifest)
        backup = None
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, backup)
        os.replace(tmp, out_dir)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def text_stealth(clean: Sequence[Sample], protected: Sequence[Sample]) -> Dict[str, Any]:
    by_id = {s.id: s for s in clean}
    pairs = [(by_id[p.id].question, p.question) for p in protected if p.id in by_id]
    if not pairs or all(a == b for a, b in pairs):
        return {"edit_distance": 0.0, "bleu": 1.0}
    return {"edit_distance": float(np.mean([stealth.edit_distance(a, b) for a, b in pairs])),
            "bleu": stealth.bleu([b for _, b in pairs], [a for a, _ in pairs])}


def versions() -> Dict[str, str]:
    import lightning
    import peft
    import transformers

    import mmguard

    return {"mmguard": mmguard.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "lightning": lightning.__version__, "python": platform.python_version()}


