"""``mmguard run`` and its single-step siblings: the benchmark of a recipe, row by row, as results.json / .md.

Rows: zero_shot (no fine-tuning), clean (fine-tuned on the clean train set), and one per attack, for every
victim x probe (a victim's ``probes`` narrows its probes). Each attack's protected set is computed once and
reused by every victim and probe. The probe runs inside fine-tuning: its random stages are re-drawn every epoch.
A victim that cannot run on this machine (qlora without a GPU and bitsandbytes) gets rows with ``accuracy`` null
and a ``note`` instead of stopping the run. Everything a user could get wrong is checked before any work
(``engine/preflight.py``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from mmguard.config.recipe import dump
from mmguard.config.spec import AttackSpec, DataSpec, ProbeSpec, RunSpec, VictimSpec, to_tree
from mmguard.core.errors import UserError
from mmguard.core.io import atomic_write_json, atomic_write_text
from mmguard.core.registry import PROBES, VICTIMS
from mmguard.data.sample import Sample
from mmguard.engine.finetune import evaluate, finetune
from mmguard.engine.models import build_adapter
from mmguard.engine.preflight import check_surrogates, check_writable, load_data
from mmguard.engine.trainer import build_logger
from mmguard.metrics.table import markdown_table, results_markdown
from mmguard.victims.qlora import QLoRAUnavailable


def build_probe(spec: ProbeSpec):
    """The probe of a spec (None for ``none``: train on the data as released)."""
    return None if spec.name == "none" else PROBES.build(spec.name, **spec.params)


class Runner:
    def __init__(self, spec: RunSpec, out: Optional[str] = None):
        self.spec = spec
        self.out = Path(out or spec.out)
        self.rows: List[Dict] = []
        self.t0 = time.time()
        self.protected: Dict[str, "ProtectedSet"] = {}

    # -- rows ------------------------------------------------------------------------------------------------
    def row(self, attack: str, victim: str, probe: str, accuracy: Optional[float], clean_accuracy: Optional[float],
            **extra) -> Dict:
        delta = (None if clean_accuracy is None or accuracy is None or attack == "zero_shot"
                 else clean_accuracy - accuracy)
        return {"attack": attack, "victim": victim, "probe": probe, "accuracy": accuracy, "delta_acc": delta,
                "psnr": None, "ssim": None, **extra}

    def add_row(self, row: Dict) -> None:
        self.rows.append(row)
        self.write()  # results so far survive a crash later in the run

    def results(self) -> Dict:
        return {"recipe": self.spec.name, "seed": self.spec.seed, "rows": self.rows,
                "elapsed_s": round(time.time() - self.t0, 1), "config": to_tree(self.spec)}

    def write(self) -> None:
        res = self.results()
        atomic_write_json(self.out / "results.json", res)
        atomic_write_text(self.out / "results.md", results_markdown(res))

    def _save_predictions(self, row_name: str, predictions) -> None:
        lines = "".join(json.dumps(p) + "\n" for p in predictions)
        atomic_write_text(self.out / "predictions" / f"{row_name.replace('/', '_')}.jsonl", lines)

    # -- the steps -------------------------------------------------------------------------------------------
    def prepare(self) -> Dict[str, List[Sample]]:
        """Everything checkable before work: the output folder, the data (every image), the surrogates."""
        check_writable(self.out)
        data = load_data(self.spec.data)
        check_surrogates(self.spec)
        return data

    def zero_shot(self, v: VictimSpec, test: List[Sample]) -> Dict:
        res = evaluate(build_adapter(v.model), test, max_new_tokens=self.spec.eval.max_new_tokens,
                       batch_size=self.spec.eval.batch_size, trainer=self.spec.trainer)
        self._save_predictions(f"zero_shot__{v.label}", res["predictions"])
        return res

    def fit_and_eval(self, v: VictimSpec, train: List[Sample], test: List[Sample], row_name: str,
                     probe: Optional[ProbeSpec] = None, clean: Optional[List[Sample]] = None) -> Dict:
        """Fine-tune victim ``v`` on ``train`` (through ``probe``; ``clean`` for mix) and evaluate on ``test``."""
        t0 = time.time()
        adapter = build_adapter(v.model)
        module = finetune(adapter, VICTIMS.build(v.name, **v.params), v.finetune, train, seed=self.spec.seed,
                          trainer=self.spec.trainer, logger=build_logger(self.spec.logger, self.out, row_name),
                          out_dir=self.out, probe=build_probe(probe) if probe is not None else None, clean=clean)
        result = evaluate(adapter, test, max_new_tokens=self.spec.eval.max_new_tokens,
                          batch_size=self.spec.eval.batch_size, trainer=self.spec.trainer, module=module)
        self._save_predictions(row_name, result["predictions"])
        result["seconds"] = round(time.time() - t0, 2)
        return result

    def protect(self, a: AttackSpec, train: List[Sample]) -> "ProtectedSet":
        """An attack's protected train set, computed once and written to ``out/protected/<label>/``."""
        from mmguard.engine.protect import protect, write_protected

        if a.label not in self.protected:
            print(f"[mmguard] protecting the train set with {a.label} ...")
            ps = protect(a, train, trainer=self.spec.trainer,
                         logger=build_logger(self.spec.logger, self.out, f"protect__{a.label}"))
            write_protected(ps, self.out / "protected" / a.label, a.seed, train)
            self.protected[a.label] = ps
        return self.protected[a.label]

    # -- the whole benchmark ---------------------------------------------------------------------------------
    def run(self) -> Dict:
        spec = self.spec
        data = self.prepare()
        train, test = data["train"], data["test"]
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "recipe.yaml", dump(spec))
        for v in spec.victims:
            if spec.eval.zero_shot:
                self.add_row(self.row("zero_shot", v.label, "none", self.zero_shot(v, test)["accuracy"], None))
            skip: Optional[str] = None  # why this victim cannot run here (qlora without a GPU)
            for probe in spec.probes_of(v):
                tag = f"{v.label}__{probe.label}"
                if skip is None:
                    try:
                        clean = self.fit_and_eval(v, train, test, f"clean__{tag}", probe=probe, clean=train)
                    except QLoRAUnavailable as err:
                        skip = f"skipped: {err}"
                        print(f"[mmguard] {v.label}: {skip}")
                if skip is not None:
                    for attack in ["clean", *(a.label for a in spec.attacks)]:
                        self.add_row(self.row(attack, v.label, probe.label, None, None, note=skip))
                    continue
                self.add_row(self.row("clean", v.label, probe.label, clean["accuracy"], clean["accuracy"],
                                      seconds=clean["seconds"]))
                for a in spec.attacks:
                    ps = self.protect(a, train)
                    res = self.fit_and_eval(v, ps.samples, test, f"{a.label}__{tag}", probe=probe, clean=train)
                    self.add_row(self.row(a.label, v.label, probe.label, res["accuracy"], clean["accuracy"],
                                          surrogates=ps.surrogates, psnr=ps.summary["psnr"], ssim=ps.summary["ssim"],
                                          protect_seconds=ps.summary["seconds"], rounds=ps.summary["rounds"],
                                          seconds=res["seconds"]))
        return self.results()


def run_recipe(spec: RunSpec, out: Optional[str] = None) -> Dict:
    runner = Runner(spec, out)
    results = runner.run()
    runner.write()
    print()
    print(markdown_table(results["rows"]))
    print(f"\nwrote {runner.out / 'results.json'} and {runner.out / 'results.md'}")
    return results


def protect_recipe(spec: RunSpec, out: str, attack_label: Optional[str] = None) -> "ProtectedSet":
    """``mmguard protect``: the recipe's train split protected by one of its attacks, written to ``out``."""
    from mmguard.engine.protect import protect, write_protected

    if not spec.attacks:
        raise UserError("the recipe has no 'attacks' entry to run")
    labels = [a.label for a in spec.attacks]
    if attack_label is not None and attack_label not in labels:
        raise UserError(f"--attack {attack_label}: the recipe's attacks are {', '.join(labels)}")
    a = spec.attacks[labels.index(attack_label) if attack_label is not None else 0]
    check_writable(Path(out))
    train = load_data(spec.data)["train"]
    check_surrogates(spec)
    ps = protect(a, train, trainer=spec.trainer)
    write_protected(ps, out, a.seed, train)
    return ps


def finetune_recipe(spec: RunSpec, out: Optional[str] = None, train_file: Optional[str] = None,
                    name: str = "finetune") -> Dict:
    """``mmguard finetune``: the recipe's first victim on a data set on disk (e.g. a protected one), evaluated on
    the recipe's clean test split; the row is added to ``out``'s results."""
    runner = Runner(spec, out)
    data = runner.prepare()
    train, test = data["train"], data["test"]
    if train_file:
        train = load_data(DataSpec("llava_json", {"train": train_file}, spec.data.checks), need=("train",))["train"]
    runner.out.mkdir(parents=True, exist_ok=True)
    v = spec.victims[0]
    res = runner.fit_and_eval(v, train, test, f"{name}__{v.label}")
    runner.add_row(runner.row(name, v.label, "none", res["accuracy"], None, train=train_file))
    return res


def evaluate_recipe(spec: RunSpec, weights: Optional[str] = None) -> Dict:
    """``mmguard evaluate``: the recipe's first victim model (zero-shot, or with ``weights`` loaded strictly)."""
    v = spec.victims[0]
    test = load_data(spec.data)["test"]
    adapter = build_adapter(v.model)
    if weights:
        load_weights(adapter, weights)
    return evaluate(adapter, test, max_new_tokens=spec.eval.max_new_tokens, batch_size=spec.eval.batch_size,
                    trainer=spec.trainer)


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
