"""Run one attack end to end: surrogates -> ProtectionModule (state on disk, resumable) -> the released data set
(8-bit PNGs with the triggers inserted, LLaVA JSON, ShareGPT, the owner's manifest), written image by image into
a folder beside the target and swapped in when complete.

Array jobs protect disjoint slices (``shard=(i, n)``: every n-th sample from the i-th) into ``shards/i/`` with no
communication; ``merge`` assembles them into one release of the same format as a single run's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from mmguard.attacks.hotflip import admissible_rule
from mmguard.config.sections import TrainerParams
from mmguard.config.spec import AttackSpec
from mmguard.config.tree import attack_tree
from mmguard.core.errors import UserError
from mmguard.core.io import atomic_write_json
from mmguard.data.export import DatasetWriter, check_export_names, image_filename
from mmguard.data.loaders import read_conversation_file
from mmguard.data.sample import Sample, tensor_to_pil
from mmguard.engine import distributed
from mmguard.engine.build import build_attack, build_model, build_probe
from mmguard.engine.finetune import DEFAULT_TRAINER, quiet_lightning
from mmguard.core.faults import stage
from mmguard.engine.protection import ProtectionModule
from mmguard.engine.readback import read_json
from mmguard.engine.state import StateDir
from mmguard.engine.store import quantize_release
from mmguard.engine.strategies import protection_strategy
from mmguard.engine.trainer import build_trainer
from mmguard.metrics import stealth

MANIFEST = "manifest.json"


@dataclasses.dataclass
class ProtectedSet:
    attack: str               # the attack's name
    label: str                # its row label in the recipe
    samples: List[Sample]     # as released, read back from disk (images decoded on use)
    surrogates: List[str]
    hyperparameters: Dict[str, Any]
    per_sample: List[Dict[str, Any]]
    summary: Dict[str, Any]
    history: List[Dict[str, float]]
    path: Optional[Path] = None
    spec_hash: Optional[str] = None


def spec_hash(obj: Any) -> str:
    """A short, stable hash of a resolved (JSON-able) spec: what a run folder keys finished work by."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sample_identity(s: Sample) -> str:
    """What a release depends on in a sample: its id, text and image. An in-memory image by its pixels (generated
    sets reuse ids across data seeds), a file by its name and size (reading 100k files' bytes to key a run would
    cost more than it saves; a copied data set keeps its key)."""
    if isinstance(s.image, Image.Image):
        image = hashlib.sha256(s.image.tobytes()).hexdigest() + f":{s.image.mode}:{s.image.size}"
    else:
        path = Path(s.image)
        image = f"{path.name}:{path.stat().st_size if path.is_file() else -1}"
    return "\0".join((s.id, s.question, s.answer, image))


def protection_hash(spec: AttackSpec, train: Sequence[Sample]) -> str:
    digest = hashlib.sha256()
    for s in train:
        digest.update(sample_identity(s).encode() + b"\n")
    return spec_hash({"attack": attack_tree(spec), "samples": digest.hexdigest()})


def build_protection(spec: AttackSpec, train: Sequence[Sample], state: StateDir,
                     surrogates: Optional[Sequence] = None) -> ProtectionModule:
    """The attack, its surrogates (built from the spec unless given) and the loop, ready to fit."""
    attack = build_attack(spec)
    surrogates = list(surrogates) if surrogates is not None else [build_model(s) for s in spec.surrogates]
    for adapter in surrogates:
        problem = attack.check_surrogate(adapter.name, len(adapter.attention_modules))
        if problem:
            raise UserError(f"attack '{spec.label}': {problem}")
    eot = [build_probe(p) for p in spec.eot]
    return ProtectionModule(surrogates, attack, spec.loop, train, weights=spec.weights, state=state, eot=eot,
                            seed=spec.seed, devices=[s.device for s in spec.surrogates])


def protect(spec: AttackSpec, train: Sequence[Sample], out: Path, *, state_dir: Path,
            trainer: Optional[TrainerParams] = None, logger=False, surrogates: Optional[Sequence] = None,
            shard: Optional[Tuple[int, int]] = None) -> ProtectedSet:
    """Protect ``train`` (or its ``shard`` (i, n)) with ``spec`` and release it to ``out``. The state lives in
    ``state_dir`` while the work goes on (running again resumes it) and is removed once the release is in place;
    a release already made for the same spec and samples is read back instead of recomputed."""
    out = Path(out)
    t0 = time.time()
    if shard is not None:
        train = list(train)[shard[0]::shard[1]]
    key = protection_hash(spec, train)
    done = read_protected(out)
    if done is not None and done.spec_hash == key:
        if distributed.rank() == 0:
            shutil.rmtree(state_dir, ignore_errors=True)  # a kill after the release, before this cleanup
        return done
    state = StateDir(Path(state_dir), rank=distributed.rank())
    trainer = trainer or DEFAULT_TRAINER
    module = build_protection(spec, train, state, surrogates)
    if state.fingerprint() not in (None, key):  # state of another spec or data: ours to replace
        shutil.rmtree(state.path)
        state = StateDir(state.path, rank=distributed.rank())
        module.state = state
    state.write_layout([s.id for s in train], [module.shape(s) for s in train], key)
    if module.attack.optimize:
        committed = state.committed() or {"round": 0, "done": False}
        module.first_round = committed["round"]
        if state.committed() is not None and distributed.rank() == 0:
            print(f"[mmguard] {spec.label}: resuming from its checkpoint (round {committed['round']} committed"
                  f"{', done' if committed['done'] else ''})")
        if not committed["done"]:
            with quiet_lightning(), stage(lambda: f"protection '{spec.label}' round {module.round}, batch "
                                                  f"{getattr(module, '_batches_done', module.start_batch)}"):
                lt = build_trainer(trainer, max_epochs=spec.loop.R - module.first_round, logger=logger,
                                   precision=spec.loop.precision, strategy=protection_strategy(trainer))
                lt.fit(module)
    elif distributed.rank() == 0:
        module.start()  # nothing to optimize: round 0 is the release
    distributed.barrier()
    if distributed.rank() == 0:
        with stage(f"the release of '{spec.label}' (being written to {out})"):
            release(module, spec, train, out, key, time.time() - t0, shard)
        shutil.rmtree(state.path, ignore_errors=True)  # ours, and redundant once the release is in place
    distributed.barrier()
    return read_protected(out)


def release(module: ProtectionModule, spec: AttackSpec, train: Sequence[Sample], out: Path, key: str,
            seconds: float, shard: Optional[Tuple[int, int]]) -> Path:
    """Quantize to 8 bits, insert the triggers, write image by image into a folder beside ``out``, then swap it
    in: a run that dies leaves the old release or the new one, never a mix. The trigger stays out of the
    released sample's record (it is in the owner's manifest only)."""
    state = module.state
    final = state.committed()["round"]
    record = state.load()
    world = len(list(state.path.glob(f"checkpoint-rank*-r{final}.json")))
    triggers = state.all_triggers(world, final) if module.attack.text else {}
    module.resume(record)
    attack, adapter = module.attack, module.surrogates[0]
    check_export_names(train)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out))
    # LPIPS where its backbone weights are on disk (never downloaded); else why not, in the manifest
    lpips_reason = stealth.lpips_unavailable_reason() if attack.image else "the attack does not change images"
    try:
        writer = DatasetWriter(tmp, llava="data.json", sharegpt="sharegpt.json")
        rows, pairs = [], []
        for s in train:
            x = s.pixels()
            image = quantize_release(x, module.deltas([s], final)[0], spec.loop.eps_x) if attack.image else x
            trigger = triggers.get(s.id)
            question = adapter.insert_trigger(s.question, trigger, module.offsets[s.id])[0]
            path = writer.add(s.replace(image=tensor_to_pil(image), question=question))
            pairs.append((s.question, question))
            linf = float((image - x).abs().max())
            lpips = stealth.lpips(x[None], image[None])[0] if lpips_reason is None else None
            rows.append({"id": s.id, "image": f"images/{image_filename(s.id)}", "linf": linf,
                         "linf_255": round(linf * 255), "trigger": trigger,
                         "trigger_at": module.offsets[s.id] if trigger else None,
                         "psnr": float(stealth.psnr(x[None], image[None])[0]) if attack.image else None,
                         "ssim": float(stealth.ssim(x[None], image[None])[0]) if attack.image else None,
                         "lpips": None if lpips is None else float(lpips[0]),
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        writer.close()
        summary = {**summarize(rows, seconds, len(module.history)), **text_stealth(pairs)}
        manifest = {
            "attack": spec.name, "label": spec.label, "surrogates": [s.name for s in spec.surrogates],
            "seed": spec.seed, "spec": attack_tree(spec), "spec_hash": key,
            "hyperparameters": {**dataclasses.asdict(spec.loop), **spec.params, "weights": spec.weights},
            "summary": summary,
            "trigger_rule": admissible_rule() if module.attack.text else None,
            "history": module.history, "samples": rows, "shard": None if shard is None else
            {"index": shard[0], "count": shard[1], "surrogates_adapted": "on this shard's samples only"},
            "lpips": summary["lpips"], "lpips_reason": lpips_reason, "versions": versions(),
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def install(tmp: Path, out: Path) -> None:
    """Move the complete release in ``tmp`` into ``out``, world-readable, its manifest last: a folder without a
    manifest is never taken for a complete release, so a kill mid-install only means installing again."""
    for p in [tmp, *tmp.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for item in sorted(tmp.iterdir(), key=lambda p: p.name == MANIFEST):
        target = out / item.name
        if item.is_dir() and target.is_dir():
            old = out / f".{item.name}.old-{os.getpid()}"
            os.replace(target, old)
            os.replace(item, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(item, target)
    tmp.rmdir()


def read_protected(out: Path) -> Optional[ProtectedSet]:
    """A release on disk (None when there is none): its samples read back through the LLaVA-JSON loader."""
    out = Path(out)
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        return None
    m = read_json(manifest_path)
    samples = read_conversation_file(out / "data.json")
    return ProtectedSet(m["attack"], m.get("label", m["attack"]), samples, m["surrogates"], m["hyperparameters"],
                        m["samples"], m["summary"], m["history"], out, m.get("spec_hash"))


def summarize(rows: List[Dict[str, Any]], seconds: float, rounds: int) -> Dict[str, Any]:
    def mean(key):
        vals = [r.get(key) for r in rows if r.get(key) is not None and np.isfinite(r[key])]
        return float(np.mean(vals)) if vals else None

    return {"n": len(rows), "psnr": mean("psnr"), "ssim": mean("ssim"), "lpips": mean("lpips"),
            "linf_max_255": max(r["linf_255"] for r in rows) if rows else None, "seconds": round(seconds, 1),
            "rounds": rounds}


def text_stealth(pairs: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    """Edit distance and BLEU of the released questions against the clean ones."""
    if not pairs or all(a == b for a, b in pairs):
        return {"edit_distance": 0.0, "bleu": 1.0}
    return {"edit_distance": float(np.mean([stealth.edit_distance(a, b) for a, b in pairs])),
            "bleu": stealth.bleu([b for _, b in pairs], [a for a, _ in pairs])}


def merge(run_dir: Path, out: Optional[Path] = None) -> Path:
    """Assemble ``run_dir/shards/*`` (array-job slices of one recipe) into one release at ``out`` (default
    ``run_dir`` itself, as ``mmguard protect --out DIR`` would have written it): the samples in the original order,
    every id once, the manifest recording the shards."""
    run_dir = Path(run_dir)
    shard_dirs = sorted((run_dir / "shards").glob("*"), key=lambda p: int(p.name) if p.name.isdigit() else -1)
    manifests = [json.loads((d / MANIFEST).read_text()) if (d / MANIFEST).is_file() else None for d in shard_dirs]
    if not shard_dirs:
        raise UserError(f"{run_dir}: no shards/ to merge (mmguard protect --shard I/N writes them)")
    counts = {m["shard"]["count"] for m in manifests if m and m.get("shard")}
    if len(counts) != 1:
        raise UserError(f"{run_dir}/shards: the shards disagree on their number ({sorted(counts)})")
    n = counts.pop()
    present = {m["shard"]["index"]: (d, m) for d, m in zip(shard_dirs, manifests) if m}
    missing = [i for i in range(n) if i not in present]
    if missing:
        raise UserError(f"{run_dir}/shards: shard(s) {', '.join(map(str, missing))} of {n} are missing or incomplete")
    specs = {json.dumps(m["spec"], sort_keys=True) for _, m in present.values()}
    if len(specs) != 1:
        raise UserError(f"{run_dir}/shards: the shards were protected with different attack settings")
    out = Path(out or run_dir)
    parts = [present[i] for i in range(n)]
    entries = [(json.loads((d / "data.json").read_text()), json.loads((d / "sharegpt.json").read_text()), d, m)
               for d, m in parts]
    size = max(len(e[0]) for e in entries)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=run_dir))
    try:
        llava, sharegpt, rows, seen = [], [], [], set()
        for k in range(size):  # shard i holds samples i, i + n, i + 2n, ...: interleave back
            for (lj, sj, d, m) in entries:
                if k >= len(lj):
                    continue
                if lj[k]["id"] in seen:
                    raise UserError(f"{run_dir}/shards: sample id {lj[k]['id']!r} is in two shards")
                seen.add(lj[k]["id"])
                (tmp / "images").mkdir(exist_ok=True)
                link_or_copy(d / lj[k]["image"], tmp / lj[k]["image"])
                llava.append(lj[k])
                sharegpt.append(sj[k])
                rows.append(m["samples"][k])
        atomic_write_json(tmp / "data.json", llava, indent=1)
        atomic_write_json(tmp / "sharegpt.json", sharegpt, indent=1)
        shutil.copy2(parts[0][0] / "dataset_info.json", tmp / "dataset_info.json")
        first = parts[0][1]
        summary = summarize(rows, sum(m["summary"]["seconds"] for _, m in parts),
                            max(m["summary"]["rounds"] for _, m in parts))
        manifest = {**first, "samples": rows, "lpips": summary["lpips"],
                    "summary": {**summary,
                                "edit_distance": float(np.mean([m["summary"].get("edit_distance", 0) for _, m in parts])),
                                "bleu": float(np.mean([m["summary"].get("bleu", 1) for _, m in parts]))},
                    "history": [m["history"] for _, m in parts],
                    "shard": None, "shards": [{"index": i, "count": n, "samples": len(e[0]), "folder": str(d)}
                                              for i, (e, (d, _)) in enumerate(zip(entries, parts))],
                    "surrogates_adapted": "per shard (each shard's surrogates adapted on its own samples only)"}
        atomic_write_json(tmp / MANIFEST, manifest)
        install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows it (no second copy of every image), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def versions() -> Dict[str, str]:
    import lightning
    import peft
    import transformers

    import mmguard

    return {"mmguard": mmguard.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "lightning": lightning.__version__, "python": platform.python_version()}
