"""``mmguard run``: the benchmark of a recipe, row by row, as results.json / .md (the single-step commands are in
``engine/commands.py``).

Rows: zero_shot (no fine-tuning), clean (fine-tuned on the clean train set), and one per attack, for every
victim x probe (a victim's ``probes`` narrows its probes). Each attack's protected set is computed once and
reused by every victim and probe. The probe runs inside fine-tuning: its random stages are re-drawn every epoch.
A victim that cannot run on this machine (qlora without a GPU and bitsandbytes) gets rows with ``accuracy`` null
and a ``note`` instead of stopping the run. Everything a user could get wrong is checked before any work
(``engine/preflight.py``).

The output folder is a run folder (``engine/runfolder.py``): results.json carries ``status: running | complete``
and, per row, a hash of the row's resolved spec; the same command on the same folder resumes, skipping finished
rows, resuming protections from their checkpoints and fine-tunes from their Lightning checkpoints. Under DDP
every rank runs the same rows; only rank 0 writes.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmguard.config.flatten import row_config
from mmguard.config.recipe import dump
from mmguard.config.seeds import seed_note
from mmguard.config.spec import AttackSpec, ProbeSpec, RunSpec, VictimSpec
from mmguard.config.tree import at_seed, attack_tree, probe_tree, to_tree, victim_tree
from mmguard.core.faults import stage
from mmguard.core.io import atomic_write_json, atomic_write_text
from mmguard.data.sample import Sample
from mmguard.engine import distributed
from mmguard.engine.build import build_model, build_victim
from mmguard.engine.finetune import evaluate, finetune
from mmguard.engine.fitkey import find_fit, fit_hash, probe_plan, run_rows
from mmguard.engine.preflight import check_models, check_surrogates, check_writable, load_data
from mmguard.engine.protect import ProtectedSet, protect, protection_hash, read_protected, spec_hash
from mmguard.engine.readback import read_json
from mmguard.engine.runfolder import RunFolder, data_folders
from mmguard.engine.tracking import Tracking
from mmguard.metrics.table import markdown_table, results_markdown, seed_table
from mmguard.models.threat import threat_model
from mmguard.probes.base import ProbePlan
from mmguard.victims.qlora import QLoRAUnavailable

RowKey = Tuple[str, str, str]


class Runner:
    def __init__(self, spec: RunSpec, out: Optional[str] = None, overwrite: bool = False, kind: str = "run",
                 group: Optional[str] = None, reuse: Sequence[Path] = ()):
        self.spec = spec
        self.reuse = [Path(p) for p in reuse]  # folders of releases that stand in for protecting again
        self.out = Path(out or spec.out)
        self.folder = RunFolder(self.out, spec.name, kind, data_folders(spec.data.params), overwrite)
        self.rows: List[Dict] = []
        self.t0 = time.time()
        self.protected: Dict[str, ProtectedSet] = {}
        self.status = "running"
        self.train: List[Sample] = []
        # rows are skipped before any run of theirs starts, so only the group's summary can be done already
        self.tracking = Tracking(spec.logger, self.out, done=lambda name: name == "summary" and self.was_complete,
                                 group=group)
        self.was_complete = False

    # -- rows ------------------------------------------------------------------------------------------------
    def row(self, attack: str, victim: str, probe: str, accuracy: Optional[float], clean_accuracy: Optional[float],
            **extra) -> Dict:
        delta = (None if clean_accuracy is None or accuracy is None or attack == "zero_shot"
                 else clean_accuracy - accuracy)
        return {"attack": attack, "victim": victim, "probe": probe, "accuracy": accuracy, "delta_acc": delta,
                "psnr": None, "ssim": None, **extra}

    def row_hash(self, v: VictimSpec, probe: Optional[ProbeSpec], attack: Optional[AttackSpec]) -> str:
        """What a row's number depends on: data, seed, evaluation, the victim, the probe and the attack."""
        return spec_hash({"data": {"name": self.spec.data.name, **self.spec.data.params}, "seed": self.spec.seed,
                          "eval": self.spec.eval.key(), "victim": victim_tree(v),
                          "probe": probe_tree(probe) if probe else None,
                          "attack": attack_tree(attack) if attack else None})

    def finished(self, key: RowKey, digest: str) -> Optional[Dict]:
        return next((r for r in self.rows if (r["attack"], r["victim"], r["probe"]) == key
                     and r.get("spec_hash") == digest), None)

    def add_row(self, row: Dict) -> None:
        key = (row["attack"], row["victim"], row["probe"])
        self.rows = [r for r in self.rows if (r["attack"], r["victim"], r["probe"]) != key] + [row]
        self.write()  # results so far survive a crash later in the run

    def results(self) -> Dict:
        res = {"recipe": self.spec.name, "seed": self.spec.seed, "status": self.status, "rows": self.rows,
               "elapsed_s": round(time.time() - self.t0, 1), "config": to_tree(self.spec)}
        if self.spec.seeds:
            res["seeds"] = self.spec.seeds
            if len(self.spec.seeds) > 1:
                res["seeds_vary"] = seed_note(*(at_seed(self.spec, s) for s in self.spec.seeds[:2]))
        return res

    def write(self) -> None:
        if distributed.rank() != 0:
            return
        res = self.results()
        atomic_write_json(self.out / "results.json", res)
        atomic_write_text(self.out / "results.md", results_markdown(res))

    def load_rows(self) -> None:
        """The rows an earlier (killed, requeued or extended) run of this folder finished."""
        path = self.out / "results.json"
        if path.is_file():
            previous = read_json(path)
            self.rows = list(previous.get("rows") or [])
            self.t0 -= float(previous.get("elapsed_s") or 0)
            self.was_complete = previous.get("status") == "complete"

    def _save_predictions(self, row_name: str, predictions) -> None:
        if distributed.rank() != 0:
            return
        lines = "".join(json.dumps(p) + "\n" for p in predictions)
        atomic_write_text(self.out / "predictions" / f"{row_name.replace('/', '_')}.jsonl", lines)

    # -- the steps -------------------------------------------------------------------------------------------
    def prepare(self) -> Dict[str, List[Sample]]:
        """Everything checkable before work (the output folder, the data, the surrogates), then the folder is
        claimed: created, resumed or (``--overwrite``) its old contents moved aside."""
        self.folder.check()
        check_writable(self.out)
        data = load_data(self.spec.data)
        check_models(self.spec)
        check_surrogates(self.spec)
        self.folder.claim()
        distributed.barrier()
        self.load_rows()
        return data

    def zero_shot(self, v: VictimSpec, test: List[Sample], logger=False) -> Dict:
        res = evaluate(build_model(v.model), test, max_new_tokens=self.spec.eval.max_new_tokens,
                       batch_size=self.spec.eval.batch_size, trainer=self.spec.trainer, logger=logger)
        self._save_predictions(f"zero_shot__{v.label}", res["predictions"])
        return res

    def fit_and_eval(self, v: VictimSpec, train: List[Sample], test: List[Sample], row_name: str,
                     plan: Optional[ProbePlan] = None, logger=False) -> Dict:
        """Fine-tune victim ``v`` on ``train`` (through a probe's ``plan``) and evaluate on ``test``; the fine-tune
        keeps a Lightning checkpoint until its row is written, so a killed run resumes it."""
        t0 = time.time()
        adapter = build_model(v.model)
        ckpt = self.out / "state" / "finetune" / row_name.replace("/", "_")
        module = finetune(adapter, build_victim(v), v.finetune, train, seed=self.spec.seed,
                          trainer=self.spec.trainer, logger=logger, out_dir=self.out, plan=plan, checkpoint_dir=ckpt,
                          watch=test if self.spec.eval.per_epoch else None, evaluation=self.spec.eval)
        result = evaluate(adapter, test, max_new_tokens=self.spec.eval.max_new_tokens,
                          batch_size=self.spec.eval.batch_size, trainer=self.spec.trainer, module=module,
                          logger=logger)
        self._save_predictions(row_name, result["predictions"])
        result["seconds"] = round(time.time() - t0, 2)
        result["checkpoint"] = ckpt
        result["record"] = fit_record(module.record)
        return result

    def fit_row(self, kind: str, v: VictimSpec, probe: ProbeSpec, train: List[Sample], clean: List[Sample],
                test: List[Sample], digest: str, clean_accuracy: Optional[float] = None,
                ps: Optional[ProtectedSet] = None) -> Optional[Dict]:
        """Row ``kind`` (clean, or an attack's with its release ``ps``) of (v, probe): victim ``v`` fine-tuned on
        ``train`` through ``probe`` (``clean``: the clean set, for mix) and evaluated. A finished fit that is the
        same computation (``engine/fitkey.py``), in this run or a ``reuse`` run folder, is read back instead. None
        when the victim cannot run here (its rows carry the note)."""
        name = f"{kind}__{v.label}__{probe.label}"
        plan = probe_plan(self.spec, probe, train, clean)
        fit = fit_hash(self.spec, v, train, plan)
        extra = {} if ps is None else {"surrogates": ps.surrogates, "threat_model": self.threat(v, kind),
                                       "psnr": ps.summary["psnr"],
                                       "ssim": ps.summary["ssim"], "protect_seconds": ps.summary["seconds"],
                                       "rounds": ps.summary["rounds"]}
        shared = find_fit(fit, [(self.out, self.rows), *((f, run_rows(f)) for f in self.reuse)])
        res = None
        with self.tracking.row(name, "finetune", row_config(self.spec, kind, v.label, probe.label)) as run:
            if shared is not None:
                source, folder = shared
                source_name = f"{source['attack']}__{source['victim']}__{source['probe']}"
                self._copy_predictions(folder, source_name, name)
                accuracy, seconds = source["accuracy"], 0.0
                extra.update({k: source[k] for k in FIT_FIELDS if k in source})
                extra["note"] = (f"read back from {source_name}{'' if folder == self.out else f' in {folder}'}: "
                                 "the same victim, seed and training set")
                print(f"[mmguard] {name}: {extra['note']}")
            else:
                try:
                    with stage(f"the fine-tune {name}"):
                        res = self.fit_and_eval(v, train, test, name, plan=plan, logger=run.logger)
                except QLoRAUnavailable as err:
                    note = f"skipped: {err}"
                    print(f"[mmguard] {v.label}: {note}")
                    self.add_row(self.row(kind, v.label, probe.label, None, None, note=note, spec_hash=digest))
                    if kind == "clean":
                        self.skip_attacks(v, probe, note)
                    return None
                accuracy, seconds = res["accuracy"], res["seconds"]
                extra.update(res["record"])
            row = self.row(kind, v.label, probe.label, accuracy, accuracy if kind == "clean" else clean_accuracy,
                           **extra, seconds=seconds, spec_hash=digest, fit_hash=fit)
            self.add_row(row)
            run.log_summary(row)
        if res is not None:
            self.done_with(res)
        return row

    def _copy_predictions(self, folder: Path, source: str, row_name: str) -> None:
        path = folder / "predictions" / f"{source.replace('/', '_')}.jsonl"
        if distributed.rank() == 0 and path.is_file():
            atomic_write_text(self.out / "predictions" / f"{row_name.replace('/', '_')}.jsonl", path.read_text())

    def done_with(self, result: Dict) -> None:
        """The row is written: its fine-tune checkpoint is no longer needed (ours to remove)."""
        distributed.barrier()
        if distributed.rank() == 0 and result.get("checkpoint") is not None:
            shutil.rmtree(result["checkpoint"], ignore_errors=True)

    def protect(self, a: AttackSpec, train: List[Sample]) -> ProtectedSet:
        """An attack's protected train set, computed once (resumed from its state, or read back when a release
        for the same spec is on disk) into ``out/protected/<label>/``."""
        if a.label not in self.protected:
            found = find_release(self.reuse, protection_hash(a, train))
            if found is not None:
                print(f"[mmguard] {a.label}: the protected set in {found.path} (same attack and samples)")
                self.protected[a.label] = found
                return found
            print(f"[mmguard] protecting the train set with {a.label} ...")
            with self.tracking.row(f"protect__{a.label}", "protect", row_config(self.spec, attack=a.label)) as run:
                ps = protect(a, train, self.out / "protected" / a.label, state_dir=self.out / "state" / a.label,
                             trainer=self.spec.trainer, logger=run.logger)
                run.log_summary(ps.summary, ps.history)
                run.log_protected(ps.path)
            self.protected[a.label] = ps
        return self.protected[a.label]

    # -- the whole benchmark ---------------------------------------------------------------------------------
    def run(self) -> Dict:
        if self.spec.seeds:
            return self.run_seeds()
        spec = self.spec
        data = self.prepare()
        train, test = data["train"], data["test"]
        self.train = train
        if distributed.rank() == 0:
            atomic_write_text(self.out / "recipe.yaml", dump(spec))
        self.write()
        for v in spec.victims:
            if spec.eval.zero_shot:
                digest = self.row_hash(v, None, None)
                if not self.finished(("zero_shot", v.label, "none"), digest):
                    with self.tracking.row(f"zero_shot__{v.label}", "evaluate",
                                           row_config(spec, "zero_shot", v.label)) as run:  # no probe: it is the start
                        with stage(f"the zero-shot evaluation of {v.label}"):
                            acc = self.zero_shot(v, test, logger=run.logger)["accuracy"]
                        row = self.row("zero_shot", v.label, "none", acc, None, spec_hash=digest)
                        self.add_row(row)
                        run.log_summary(row)
            for probe in spec.probes_of(v):
                self.run_probe(v, probe, train, test)
        self.status = "complete"
        self.write()
        if distributed.rank() == 0:
            remove_empty(self.out / "state")
        self.folder.release()
        return self.results()

    def run_seeds(self) -> Dict:
        """The seed axis: the whole recipe once per seed, each in its own run folder ``seed-<s>/`` (resumable
        on its own); this folder's results hold every seed's rows (each with its ``seed``) and their mean and
        standard deviation."""
        self.folder.check()
        check_writable(self.out)
        self.folder.claim()
        distributed.barrier()
        self.load_rows()
        if distributed.rank() == 0:
            atomic_write_text(self.out / "recipe.yaml", dump(self.spec))
        self.write()
        for seed in self.spec.seeds:
            sub = Runner(at_seed(self.spec, seed), str(self.out / f"seed-{seed}"), group=self.out.resolve().name,
                         reuse=self.reuse)
            rows = [{**r, "seed": seed} for r in sub.run()["rows"]]
            self.rows = [r for r in self.rows if r.get("seed") != seed] + rows
            self.train = self.train or sub.train
            self.write()
        self.status = "complete"
        self.write()
        self.folder.release()
        return self.results()

    def skip_attacks(self, v: VictimSpec, probe: ProbeSpec, note: str) -> None:
        """Rows without numbers, with the reason, for every attack on a victim that cannot run here."""
        for a in self.spec.attacks:
            digest = self.row_hash(v, probe, a)
            if not self.finished((a.label, v.label, probe.label), digest):
                self.add_row(self.row(a.label, v.label, probe.label, None, None, note=note, spec_hash=digest,
                                      threat_model=self.threat(v, a.label)))

    def threat(self, v: VictimSpec, attack: str) -> str:
        """white-, gray- or black-box, from the weights victim ``v`` and the attack's surrogates start from."""
        return threat_model(self.spec.attack(attack).surrogates, v.model)

    def run_probe(self, v: VictimSpec, probe: ProbeSpec, train: List[Sample], test: List[Sample]) -> None:
        digest = self.row_hash(v, probe, None)
        clean = self.finished(("clean", v.label, probe.label), digest)
        if clean is None:
            clean = self.fit_row("clean", v, probe, train, train, test, digest)
            if clean is None:
                return
        elif clean["accuracy"] is None:  # the victim cannot run here (an earlier pass noted why)
            self.skip_attacks(v, probe, clean.get("note") or "skipped")
            return
        for a in self.spec.attacks:
            digest = self.row_hash(v, probe, a)
            if self.finished((a.label, v.label, probe.label), digest):
                continue
            ps = self.protect(a, train)
            self.fit_row(a.label, v, probe, ps.samples, train, test, digest, clean_accuracy=clean["accuracy"], ps=ps)


# what a fit-level probe or per-epoch evaluation adds to a row (a fit read back carries its source's)
FIT_FIELDS = ("best_epoch", "val_accuracy", "epochs_trained", "isolated", "epoch_accuracy", "peak_accuracy",
              "peak_epoch")


def fit_record(record: Dict) -> Dict:
    """A fine-tune's ``module.record`` as row fields: the isolated samples counted (their ids are the module's)."""
    out = {k: record[k] for k in FIT_FIELDS if k in record}
    if "isolated" in out:
        out["isolated"] = len(out["isolated"])
    return out


def find_release(folders: Sequence[Path], key: str) -> Optional[ProtectedSet]:
    """A complete release made for protection hash ``key`` in one of ``folders`` (each a release, or a folder
    of releases such as a run folder's ``protected/``), or None."""
    for folder in folders:
        for candidate in [folder, *(sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else [])]:
            ps = read_protected(candidate)
            if ps is not None and ps.spec_hash == key:
                return ps
    return None


def remove_empty(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders if they hold no file (the state of a finished run)."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
        shutil.rmtree(folder)


def run_recipe(spec: RunSpec, out: Optional[str] = None, overwrite: bool = False,
               reuse: Sequence[Path] = ()) -> "Runner":
    """The whole benchmark; the Runner (its results, train samples and tracking) is returned for the report.
    ``reuse``: folders of earlier releases; one made for the same attack spec and samples is used as it is."""
    runner = Runner(spec, out, overwrite, reuse=reuse)
    try:
        results = runner.run()
    finally:
        runner.folder.release()  # also when stopped (its seeds' folders: released at exit)
    if distributed.rank() == 0:
        print()
        print(seed_table(results["rows"]) if spec.seeds else markdown_table(results["rows"]))
        print(f"\nwrote {runner.out / 'results.json'} and {runner.out / 'results.md'}")
    return runner
