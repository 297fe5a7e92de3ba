"""``mmguard run``: the whole benchmark of a recipe, row by row, written as results.json / results.md.

Rows: zero_shot (no fine-tuning), clean (fine-tuned on the clean train set), and one per attack, for every
victim x probe (a victim's ``probes`` narrows its probes). Each attack's protected set is computed once and
reused by every victim and probe. The probe runs inside fine-tuning (``finetune(probe=...)``): its random
stages are re-drawn every epoch. A victim that cannot run on this machine (qlora without a GPU and
bitsandbytes) gets rows with ``accuracy`` null and a ``note`` instead of stopping the run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import DictConfig, OmegaConf

from mmguard.data.sample import Sample
from mmguard.engine.finetune import evaluate, finetune
from mmguard.engine.trainer import build_logger
from mmguard.core.io import atomic_write_json, atomic_write_text
from mmguard.models import build_model
from mmguard.recipe import dump, probe_label, to_container, victim_label  # noqa: F401 (re-exported)
from mmguard.core.registry import DATASETS
from mmguard.report.table import markdown_table, results_markdown
from mmguard.victims.qlora import QLoRAUnavailable


def load_data(cfg: DictConfig) -> Dict[str, List[Sample]]:
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k != "name"}
    data = DATASETS.get(cfg.data.name)(**kwargs)
    for split in ("train", "test"):
        if not data.get(split):
            raise ValueError(f"data set '{cfg.data.name}' gave no '{split}' samples (data.{split})")
    return data


def apply_probe(probe: Dict, samples: List[Sample], clean: List[Sample], seed: int) -> List[Sample]:
    """The adaptive fine-tuner's transformation of its training set, applied once ("none": as is). Fine-tuning
    itself takes the probe (``finetune(probe=...)``), which re-draws random stages every epoch."""
    if probe["name"] == "none":
        return list(samples)
    from mmguard.core.registry import PROBES

    params = {k: v for k, v in probe.items() if k not in ("name", "label")}
    return PROBES.build(probe["name"], **params).apply(list(samples), clean=list(clean), seed=seed)


def build_victim_model(cfg: DictConfig, v):
    seed = cfg.seed if v.seed is None else v.seed
    return build_model(v.model, seed=seed, pretrained=v.pretrained, trust_remote_code=v.trust_remote_code)


class Runner:
    def __init__(self, cfg: DictConfig, out: Optional[str] = None):
        self.cfg = cfg
        self.out = Path(out or cfg.out)
        self.rows: List[Dict] = []
        self.t0 = time.time()
        self._protected = None

    def _logger(self, run_name: str):
        return build_logger(self.cfg.logger, self.out, run_name)

    def _save_predictions(self, row_name: str, predictions) -> None:
        lines = "".join(json.dumps(p) + "\n" for p in predictions)
        atomic_write_text(self.out / "predictions" / f"{row_name.replace('/', '_')}.jsonl", lines)

    def add_row(self, row: Dict) -> None:
        self.rows.append(row)
        self.write()  # results so far survive a crash later in the run

    def fit_and_eval(self, v, train: List[Sample], test: List[Sample], row_name: str, probe=None,
                     clean: Optional[List[Sample]] = None) -> Dict:
        """Fine-tune victim ``v`` on ``train`` (through ``probe``; ``clean`` for mix) and evaluate on ``test``."""
        t0 = time.time()
        adapter = build_victim_model(self.cfg, v)
        module = finetune(adapter, v, train, seed=self.cfg.seed, trainer_cfg=self.cfg.trainer,
                          logger=self._logger(row_name), out_dir=self.out, probe=probe, clean=clean)
        result = evaluate(adapter, test, max_new_tokens=self.cfg.eval.max_new_tokens,
                          batch_size=self.cfg.eval.batch_size, trainer_cfg=self.cfg.trainer, module=module)
        self._save_predictions(row_name, result["predictions"])
        result["seconds"] = round(time.time() - t0, 2)
        return result

    def _skipped_rows(self, label: str, p_label: str, note: str) -> None:
        self.add_row(self._row("clean", label, p_label, None, None, note=note))
        for a in self.cfg.attacks:
            self.add_row(self._row(a.get("label") or a.name, label, p_label, None, None, note=note))

    def run(self) -> Dict:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "recipe.yaml", dump(cfg))
        data = load_data(cfg)
        train, test = data["train"], data["test"]
        for v in cfg.victims:
            label = victim_label(v)
            if cfg.eval.zero_shot:
                adapter = build_victim_model(cfg, v)
                res = evaluate(adapter, test, max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                               trainer_cfg=cfg.trainer)
                self._save_predictions(f"zero_shot__{label}", res["predictions"])
                self.add_row(self._row("zero_shot", label, "none", res["accuracy"], None))
            skip: Optional[str] = None  # why this victim cannot run here (qlora without a GPU)
            for probe in cfg.probes:
                probe = OmegaConf.to_container(probe, resolve=True)
                p_label = probe_label(probe)
                if v.probes is not None and p_label not in v.probes:
                    continue
                tag = f"{label}__{p_label}"
                if skip is None:
                    try:
                        clean = self.fit_and_eval(v, train, test, f"clean__{tag}", probe=probe, clean=train)
                    except QLoRAUnavailable as err:
                        skip = f"skipped: {err}"
                        print(f"[mmguard] {label}: {skip}")
                if skip is not None:
                    self._skipped_rows(label, p_label, skip)
                    continue
                self.add_row(self._row("clean", label, p_label, clean["accuracy"], clean["accuracy"],
                                       seconds=clean["seconds"]))
                for attack_label, ps in self.protected_sets(train).items():
                    res = self.fit_and_eval(v, ps.samples, test, f"{attack_label}__{tag}", probe=probe, clean=train)
                    self.add_row(self._row(attack_label, label, p_label, res["accuracy"], clean["accuracy"],
                                           surrogates=ps.surrogates, psnr=ps.summary["psnr"],
                                           ssim=ps.summary["ssim"], protect_seconds=ps.summary["seconds"],
                                           rounds=ps.summary["rounds"], seconds=res["seconds"]))
        return self.results()

    def protected_sets(self, train: List[Sample]) -> Dict[str, "ProtectedSet"]:
        """Each attack's protected train set, computed once (the first time a victim needs it) and written to
        ``out/protected/<attack>/``."""
        from mmguard.engine.protect import protect, write_protected

        if self._protected is None:
            self._protected = {}
            v0 = self.cfg.victims[0]
            default = [{"name": v0.model, "pretrained": v0.pretrained, "seed": v0.seed}]
            for a in self.cfg.attacks:
                a = OmegaConf.to_container(a, resolve=True)
                attack_label = a.get("label") or a["name"]
                if attack_label in self._protected:
                    raise ValueError(f"two attacks are labelled '{attack_label}': give one a distinct 'label'")
                print(f"[mmguard] protecting the train set with {attack_label} ...")
                ps = protect(a, train, seed=self.cfg.seed, default_surrogates=default, trainer_cfg=self.cfg.trainer,
                             logger=self._logger(f"protect__{attack_label}"))
                write_protected(ps, self.out / "protected" / attack_label, self.cfg.seed, train)
                self._protected[attack_label] = ps
        return self._protected

    def _row(self, attack: str, victim: str, probe: str, accuracy: Optional[float], clean_accuracy: Optional[float],
             **extra) -> Dict:
        delta = (None if clean_accuracy is None or accuracy is None or attack == "zero_shot"
                 else clean_accuracy - accuracy)
        row = {"attack": attack, "victim": victim, "probe": probe, "accuracy": accuracy, "delta_acc": delta,
               "psnr": None, "ssim": None}
        row.update(extra)
        return row

    def results(self) -> Dict:
        return {"recipe": self.cfg.name, "seed": self.cfg.seed, "rows": self.rows,
                "elapsed_s": round(time.time() - self.t0, 1), "config": to_container(self.cfg)}

    def write(self) -> None:
        res = self.results()
        atomic_write_json(self.out / "results.json", res)
        atomic_write_text(self.out / "results.md", results_markdown(res))


def run_recipe(cfg: DictConfig, out: Optional[str] = None) -> Dict:
    runner = Runner(cfg, out)
    results = runner.run()
    runner.write()
    print()
    print(markdown_table(results["rows"]))
    print(f"\nwrote {runner.out / 'results.json'} and {runner.out / 'results.md'}")
    return results
