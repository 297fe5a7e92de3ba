"""The ``mmguard`` command. It only wires: a recipe is loaded into its spec, and engine functions do the work.

A mistake the user can fix (a ``UserError``: recipe key, data file, model name, output folder) prints one line,
``mmguard: error: ...``, and exits 2 with nothing on disk changed; ``--debug`` shows the traceback. A full disk
is one line too (exit 2, the last checkpoint intact), and so is a signal to run, protect or finetune (exit 128 +
its number, the state written so far intact: the same command resumes); see ``core/faults.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

KINDS = ("models", "datasets", "attacks", "victims", "probes")


def _spec(args):
    from mmguard.config.recipe import load_recipe

    return load_recipe(args.recipe, args.overrides, overlays=args.overlay)


def cmd_list(args) -> int:
    from mmguard.core.params import explain
    from mmguard.core.registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        reg = REGISTRIES[kind]
        print(f"{kind} ({len(reg)}):")
        for name in reg.names(args.pattern or "*"):
            print(f"  {name}")
            if args.params and kind != "models":
                for line in explain(reg.get(name)):
                    print(f"      {line}")
    return 0


def cmd_run(args) -> int:
    spec = _spec(args)
    if args.print_config:
        from mmguard.config.recipe import dump

        print(dump(spec), end="")
        return 0
    from pathlib import Path

    from mmguard.core.errors import UserError
    from mmguard.engine import distributed
    from mmguard.engine.runner import run_recipe

    missing = [d for d in args.reuse if not Path(d).is_dir()]
    if missing:
        raise UserError(f"--reuse {missing[0]}: no such folder")
    runner = run_recipe(spec, args.out, overwrite=args.overwrite, reuse=[Path(d) for d in args.reuse])
    report = None
    if not args.no_report and distributed.rank() == 0:
        out = args.out or spec.out
        try:
            report = _write_report(out, samples=4, attention=True, layer=0)
        except Exception as err:  # noqa: BLE001 - the results are written; the report can be made again
            print(f"mmguard: warning: the run finished, but its report failed ({type(err).__name__}: {err}); "
                  f"make it with 'mmguard report {out}'", file=sys.stderr)
    runner.tracking.summary_run(runner.results(), clean=runner.train, report=report)
    return 0


def _write_report(run_dir, samples: int, attention: bool, layer: int):
    from mmguard.report.html import write_report

    path = write_report(run_dir, samples=samples, attention=attention, layer=layer)
    print(f"wrote {path} (figures in {path.parent / 'figures'})")
    return path


def cmd_report(args) -> int:
    """``mmguard report DIR``: DIR/report.html (self-contained) and DIR/figures/*.png from a run directory."""
    _write_report(args.run_dir, samples=args.samples, attention=not args.no_attention, layer=args.layer)
    return 0


def cmd_protect(args) -> int:
    """Protect the recipe's train split with its first attack (or ``--attack LABEL``) and write the data set."""
    from mmguard.engine import distributed
    from mmguard.engine.commands import protect_recipe

    ps = protect_recipe(_spec(args), args.out, args.attack, overwrite=args.overwrite, shard=_shard(args.shard))
    if distributed.rank() != 0:
        return 0
    s = ps.summary
    psnr = f"{s['psnr']:.2f} dB" if s["psnr"] is not None else "-"
    print(f"wrote {ps.path}/data.json ({s['n']} samples, attack {ps.label}, surrogates {', '.join(ps.surrogates)}, "
          f"PSNR {psnr}, max L-inf {s['linf_max_255']}/255)")
    return 0


def _shard(text):
    """``--shard I/N`` -> (I, N)."""
    if text is None:
        return None
    from mmguard.core.errors import UserError

    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected I/N, e.g. 0/4 (slice I of N, counted from 0)") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: I must be in 0..N-1")
    return i, n


def cmd_merge(args) -> int:
    """``mmguard merge DIR``: the shards of an array job as one release in DIR."""
    from mmguard.engine.commands import merge_shards

    out = merge_shards(args.run_dir)
    print(f"wrote {out}/data.json (merged from {out}/shards)")
    return 0


def cmd_finetune(args) -> int:
    """Fine-tune the recipe's first victim on a data set on disk (e.g. a protected one) and evaluate it on the
    recipe's clean test split."""
    from mmguard.engine.commands import finetune_recipe

    res = finetune_recipe(_spec(args), args.out, args.train, args.name)
    from mmguard.engine import distributed

    if distributed.rank() != 0:
        return 0
    print(f"accuracy on the clean test split: {res['accuracy']:.3f} ({res['n']} samples)")
    return 0


def cmd_evaluate(args) -> int:
    from mmguard.engine.commands import evaluate_recipe

    spec = _spec(args)
    res = evaluate_recipe(spec, args.weights, args.out, args.name)
    print(f"{spec.victims[0].model.name}: accuracy {res['accuracy']:.3f} on {res['n']} test samples")
    return 0


def cmd_zoo(args) -> int:
    from mmguard.config.spec import ModelSpec
    from mmguard.core.model_names import is_tiny
    from mmguard.core.registry import MODELS
    from mmguard.engine.build import build_model
    from mmguard.engine.pretrain import PRETRAIN, twin_path

    for name in args.models or MODELS.names("tiny-*"):
        if name not in MODELS:
            from mmguard.core.errors import UserError

            raise UserError(MODELS.unknown_message(name))
        if not is_tiny(name):  # a pre-trained model: its alignment, on every core (a 270M model, not a tiny one)
            import torch

            from mmguard.engine.align import align_model

            torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", os.cpu_count() or 1)))
            manifest = align_model(name)
            print(f"{name}: aligned in {manifest['wall_s']:.0f} s; held-out accuracy "
                  f"{manifest['held_out_accuracy']['before']:.3f} -> {manifest['held_out_accuracy']['after']:.3f}")
            continue
        adapter = build_model(ModelSpec(name, pretrained=True, seed=args.seed))
        print(f"{name}: {twin_path(adapter, args.seed, PRETRAIN)}")
    return 0


def set_cpu_threads() -> None:
    """Tiny models on CPU: one intra-op thread. Two OpenMP threads on a busy 2-core machine were measured 70x
    slower per step (spin-waiting); set MMGUARD_NUM_THREADS to change it."""
    import torch

    torch.set_num_threads(int(os.environ.get("MMGUARD_NUM_THREADS", "1")))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmguard", description="Unlearnable image-text data for LVLMs, benchmarked.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list registered components")
    s.add_argument("kind", nargs="?", choices=KINDS)
    s.add_argument("--pattern", default=None, help="wildcard filter, e.g. 'tiny-*'")
    s.add_argument("--params", action="store_true", help="show each component's parameters and their ranges")
    s.set_defaults(fn=cmd_list)

    def recipe_args(s, out_required: bool = False):
        s.add_argument("recipe", help="recipe YAML")
        s.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. victims.0.epochs=3 seed=1")
        s.add_argument("--overlay", action="append", default=[], metavar="YAML",
                       help="a recipe merged after RECIPE (repeatable), e.g. recipes/debug.yaml for a smoke run")
        s.add_argument("--out", required=out_required, default=None,
                       help="output folder" + ("" if out_required else " (default: the recipe's 'out')"))

    s = sub.add_parser("run", help="run the whole benchmark of a recipe")
    recipe_args(s)
    s.add_argument("--overwrite", action="store_true",
                   help="--out may hold something else: it is moved aside (DIR.replaced-<time>), never deleted")
    s.add_argument("--print-config", action="store_true", help="print the resolved recipe (every default) and exit")
    s.add_argument("--no-report", action="store_true", help="skip report.html (make it later: mmguard report DIR)")
    s.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="a release, or a folder of releases (another run's protected/), to take protected sets "
                        "from instead of protecting again when made for the same attack spec and samples "
                        "(repeatable)")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("report", help="write DIR/report.html and DIR/figures/ for a run directory")
    s.add_argument("run_dir", help="a folder written by 'mmguard run' (results.json, recipe.yaml, protected/)")
    s.add_argument("--samples", type=int, default=4, help="samples shown per attack (default 4)")
    s.add_argument("--no-attention", action="store_true", help="skip the attention maps (no model is built)")
    s.add_argument("--layer", type=int, default=0, help="language-model layer of the attention maps (default 0)")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("protect", help="protect the recipe's train split and write the data set")
    recipe_args(s, out_required=True)
    s.add_argument("--overwrite", action="store_true",
                   help="--out may hold something else: it is moved aside (DIR.replaced-<time>), never deleted")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="protect slice I of N (an array job's task) into DIR/shards/I; then: mmguard merge DIR")
    s.add_argument("--attack", default=None, help="which of the recipe's attacks (its label; default the first)")
    s.set_defaults(fn=cmd_protect)

    from mmguard.launch.collect import add_collect_arguments, cmd_collect
    from mmguard.launch.sweep import add_sweep_arguments, cmd_sweep

    s = sub.add_parser("sweep", help="expand a grid of overrides into runs: local, a SLURM array, or a W&B sweep")
    add_sweep_arguments(s)
    s.set_defaults(fn=cmd_sweep)

    s = sub.add_parser("collect", help="one table of many run folders: mean +- std over seeds")
    add_collect_arguments(s)
    s.set_defaults(fn=cmd_collect)

    s = sub.add_parser("merge", help="assemble the shards of 'protect --shard I/N --out DIR' into one release")
    s.add_argument("run_dir", help="the --out folder of the shards")
    s.set_defaults(fn=cmd_merge)

    s = sub.add_parser("finetune", help="fine-tune the recipe's first victim, evaluate on its clean test split")
    recipe_args(s)
    s.add_argument("--train", default=None, help="a LLaVA-JSON data set to train on (e.g. protected data.json)")
    s.add_argument("--name", default="finetune", help="row name in results.json")
    s.set_defaults(fn=cmd_finetune)

    s = sub.add_parser("evaluate", help="evaluate the recipe's first victim model (zero-shot or given weights)")
    recipe_args(s)
    s.add_argument("--weights", default=None, help="safetensors weights to load first (every key must match)")
    s.add_argument("--name", default="evaluate", help="row name in results.json (with --out)")
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("zoo", help="the model zoo")
    zsub = s.add_subparsers(dest="zoo_command", required=True)
    z = zsub.add_parser("pretrain", help="pre-train (or find cached) tiny twins; align a pre-trained model "
                                         "(effnet-gemma3-270m: LLaVA's two stages, written to models/aligned/)")
    z.add_argument("models", nargs="*", help="model names (default: all tiny ones)")
    z.add_argument("--seed", type=int, default=0)
    z.set_defaults(fn=cmd_zoo)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    # overrides may come after options too ("finetune R --train X a.b=1"): argparse leaves those over
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    set_cpu_threads()
    from mmguard.core import faults
    from mmguard.core.errors import UserError

    try:
        with faults.signals_raise(args.fn in (cmd_run, cmd_protect, cmd_finetune)):  # the resumable commands
            return args.fn(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"mmguard: error: {err}", file=sys.stderr)
        return 2
    except BaseException as err:  # a fault (a signal, a full disk): one line, the status it calls for
        fault = None if args.debug else faults.explain(err, getattr(args, "out", None))
        if fault is None:
            raise
        print(f"mmguard: error: {fault[0]}", file=sys.stderr)
        return fault[1]


if __name__ == "__main__":
    sys.exit(main())
