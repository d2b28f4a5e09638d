"""``geosane evaluate``: compare starts (GeoSANE, scratch, ImageNet prompt, matched noise, ...) by fine-tuning them.

Runs an experiment config (a YAML file, or a packaged name: ``demo``, ``quick``) or any subset of it, writes
``OUT/runs/**.json`` (one per run, reused on re-runs), ``OUT/results.md``, ``OUT/results.json`` and
``OUT/plots/*.png``, and prints the markdown tables.

Example:
    geosane evaluate --config demo --out runs/demo-eval --model runs/small/model --collection collection/ \\
        [--workers 2] [--no-resume] [--tasks landsat8-cloud-segmentation] [--starts scratch,geosane:kde] [--seeds 0,1]

One task of your own instead of the config's tasks (the config, default ``quick``, gives targets, starts, seeds):
    geosane evaluate --task torchgeo:eurosat --root data/eurosat --out runs/eurosat --model runs/small/model
    geosane evaluate --data my_patches/ --sensor S2 --out runs/mine --model runs/small/model
``torchgeo:`` tasks (eurosat, resisc45, so2sat, bigearthnet) need ``pip install 'geosane-hf[torchgeo]'`` and the data
in TorchGeo's layout under --root (never downloaded); --data reads ``train|test/images/*.tif`` + ``labels.csv``.

Exit codes: 0 done; 1 some runs failed (listed in the tables); 2 bad input (unknown task or start, a GeoSANE start
without --model, a missing config file).
"""

from __future__ import annotations

import argparse
import sys


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of names, got {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(t) for t in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integer seeds, e.g. 0,1,2, got {text!r}") from None


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer number of workers, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected workers >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare starts (GeoSANE vs baselines) by fine-tuning them on RS tasks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help="experiment YAML, or a packaged name (demo, quick, samplers; default with --task/--data: quick)",
    )
    parser.add_argument("--out", required=True, help="results folder (run files are reused from it)")
    parser.add_argument("--workers", type=_workers, default=None, help="processes, one torch thread each")
    parser.add_argument("--no-resume", action="store_true", help="re-run everything instead of reusing run files")
    parser.add_argument("--tasks", type=_names, default=None, help="comma-separated subset of the config's tasks")
    parser.add_argument("--starts", type=_names, default=None, help="comma-separated subset of the config's starts")
    parser.add_argument("--seeds", type=_seeds, default=None, help="comma-separated seeds (replace the config's)")
    parser.add_argument("--model", default=None, help="GeoSANE model folder or Hub id (overrides geosane.model)")
    parser.add_argument("--collection", default=None, help="collection folder (overrides geosane.collection)")
    parser.add_argument("--store", default=None, help="store folder for generated repos (overrides geosane.store)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    own = parser.add_argument_group("one task of your own (replaces the config's tasks)")
    own.add_argument("--task", default=None, help="torchgeo:eurosat|resisc45|so2sat|bigearthnet (needs --root)")
    own.add_argument("--root", default=None, help="the TorchGeo data folder of --task")
    own.add_argument("--data", default=None, help="a folder of your patches: {train,test}/images/*.tif + labels.csv")
    own.add_argument("--kind", default="classification", choices=("classification", "segmentation", "detection"))
    own.add_argument("--bands", type=_names, default=None, help="band names of --data, e.g. B02,B03,B04,B08")
    own.add_argument("--sensor", default=None, help="sensor of the --data band names: L8, S2 or S1")
    own.add_argument("--max-train", type=_workers, default=None, help="read at most this many training samples")
    own.add_argument("--max-test", type=_workers, default=None, help="read at most this many test samples")
    parser.set_defaults(func=run)


def _own_task(args: argparse.Namespace):
    """The TaskSpec of --task/--data, or None."""
    from pathlib import Path

    from geosane_hf.experiments.transfer.run import ExperimentConfigError, TaskSpec

    if args.task and args.data:
        raise ExperimentConfigError("expected either --task or --data, got both")
    if args.task:
        if not args.task.startswith("torchgeo:"):
            raise ExperimentConfigError(
                f"expected --task torchgeo:<name> (built-in tasks are chosen with --tasks), got {args.task!r}"
            )
        if not args.root:
            raise ExperimentConfigError(f"--task {args.task} needs --root DIR (the data in TorchGeo's layout)")
        return TaskSpec(args.task, args.max_train, args.max_test, root=args.root)
    if args.data:
        name = f"data:{Path(args.data).resolve().name}"
        bands = tuple(args.bands) if args.bands else None
        return TaskSpec(
            name, args.max_train, args.max_test, bands=bands, root=args.data, kind=args.kind, sensor=args.sensor
        )
    return None


def run(args: argparse.Namespace) -> int:
    from geosane_hf.experiments.transfer.run import ExperimentConfigError, load_experiment_config, run_experiment

    try:
        own = _own_task(args)
        if args.config is None and own is None:
            raise ExperimentConfigError("expected --config (or --task / --data for one task of your own), got none")
        config = load_experiment_config(args.config or "quick")
        config = config.with_geosane(model=args.model, collection=args.collection, store=args.store)
        if own is not None:
            from dataclasses import replace

            # the config's global targets apply (the quick config's are tf_efficientnet_lite0)
            config = replace(config, tasks=(own,))
            config.validate(runnable=False)
        config = config.select(tasks=args.tasks, starts=args.starts, seeds=args.seeds)
        result = run_experiment(
            config, args.out, resume=not args.no_resume, workers=args.workers, progress=not args.quiet
        )
    except ExperimentConfigError as error:
        print(f"geosane evaluate: error: {error}", file=sys.stderr)
        return 2
    print(result.to_markdown())
    print(f"wrote {result.out_dir / 'results.md'}, results.json and plots/ ({result.seconds:.0f} s)", file=sys.stderr)
    if result.failed:
        print(f"geosane evaluate: {len(result.failed)} run(s) failed (see results.md)", file=sys.stderr)
        return 1
    return 0
