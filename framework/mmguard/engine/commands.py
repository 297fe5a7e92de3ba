"""The single-step commands beside ``mmguard run``: ``protect`` (one attack's release, or a shard of it), ``merge``
(the shards as one release), ``finetune`` (a victim on a data set on disk) and ``evaluate`` (a victim model, zero-shot
or with saved weights). Each checks what it can before work, as the Runner does, and writes into a run folder."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

from mmguard.config.spec import DataSpec, RunSpec
from mmguard.core.errors import UserError
from mmguard.core.faults import stage
from mmguard.engine import distributed
from mmguard.engine.build import build_model
from mmguard.engine.finetune import evaluate
from mmguard.engine.preflight import check_models, check_surrogates, check_writable, load_data
from mmguard.engine.protect import ProtectedSet, merge, protect
from mmguard.engine.runfolder import RunFolder, data_folders
from mmguard.engine.runner import Runner


def protect_recipe(spec: RunSpec, out: str, attack_label: Optional[str] = None, overwrite: bool = False,
                   shard: Optional[Tuple[int, int]] = None) -> ProtectedSet:
    """``mmguard protect``: the recipe's train split protected by one of its attacks, written to ``out`` (or its
    slice ``shard`` (i, n) to ``out/shards/i``, for ``mmguard merge``)."""
    if not spec.attacks:
        raise UserError("the recipe has no 'attacks' entry to run")
    labels = [a.label for a in spec.attacks]
    if attack_label is not None and attack_label not in labels:
        raise UserError(f"--attack {attack_label}: the recipe's attacks are {', '.join(labels)}")
    a = spec.attacks[labels.index(attack_label) if attack_label is not None else 0]
    target = Path(out) if shard is None else Path(out) / "shards" / str(shard[0])
    # a shard claims its own folder: the array's other tasks write beside it at the same time
    folder = RunFolder(Path(out), spec.name, "protect", data_folders(spec.data.params), overwrite, writer=target)
    folder.check()
    check_writable(Path(out))
    train = load_data(spec.data)["train"]
    check_models(spec)
    check_surrogates(spec)
    folder.claim()
    distributed.barrier()
    try:
        return protect(a, train, target, state_dir=target / "state", trainer=spec.trainer, shard=shard)
    finally:
        folder.release()  # also when stopped: the state stays, the claim goes


def merge_shards(run_dir: str) -> Path:
    """``mmguard merge DIR``: the shards of ``mmguard protect --shard I/N --out DIR`` as one release in DIR."""
    return merge(Path(run_dir))


def finetune_recipe(spec: RunSpec, out: Optional[str] = None, train_file: Optional[str] = None,
                    name: str = "finetune") -> Dict:
    """``mmguard finetune``: the recipe's first victim on a data set on disk (e.g. a protected one), evaluated on
    the recipe's clean test split; its row is added to ``out``'s results (earlier rows are kept)."""
    runner = Runner(spec, out)
    try:
        data = runner.prepare()
        train, test = data["train"], data["test"]
        if train_file:
            train = load_data(DataSpec("llava_json", {"train": train_file}, spec.data.checks),
                              need=("train",))["train"]
        v = spec.victims[0]
        with stage(f"the fine-tune {name}__{v.label}"):
            res = runner.fit_and_eval(v, train, test, f"{name}__{v.label}")
        runner.add_row(runner.row(name, v.label, "none", res["accuracy"], None, train=train_file))
        runner.done_with(res)
    finally:
        runner.folder.release()
    return res


def evaluate_recipe(spec: RunSpec, weights: Optional[str] = None, out: Optional[str] = None,
                    name: str = "evaluate") -> Dict:
    """``mmguard evaluate``: the recipe's first victim model (zero-shot, or with ``weights`` loaded strictly);
    with ``out``, its row is added to that run folder's results."""
    v = spec.victims[0]
    runner = Runner(spec, out) if out else None
    test = runner.prepare()["test"] if runner else load_data(spec.data)["test"]
    adapter = build_model(v.model)
    if weights:
        load_weights(adapter, weights)
    res = evaluate(adapter, test, max_new_tokens=spec.eval.max_new_tokens, batch_size=spec.eval.batch_size,
                   trainer=spec.trainer)
    if runner is not None:
        runner._save_predictions(f"{name}__{v.label}", res["predictions"])
        runner.add_row(runner.row(name, v.label, "none", res["accuracy"], None, weights=weights))
        runner.folder.release()
    return res


def load_weights(adapter, path: str) -> None:
    """Safetensors weights into ``adapter`` strictly: every key must match, or nothing is evaluated."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if not Path(path).is_file():
        raise UserError(f"--weights {path}: no such file")
    try:
        missing, unexpected = load_model(adapter.model, path, strict=False)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise UserError(f"--weights {path}: cannot be loaded into {adapter.name} ({err})") from None
    if missing or unexpected:
        raise UserError(f"--weights {path} does not fit {adapter.name}: {len(missing)} missing key(s) "
                        f"{sorted(missing)[:3]}, {len(unexpected)} unexpected {sorted(unexpected)[:3]}")
