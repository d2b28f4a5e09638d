"""``geosane evaluate``: compare starts (GeoSANE, scratch, ImageNet prompt, matched noise, ...) by fine-tuning them.

Runs an experiment config (a YAML file, or a packaged name: ``demo``, ``quick``) or any subset of it, writes
``OUT/runs/**.json`` (one per run, reused on re-runs), ``OUT/results.md``, ``OUT/results.json`` and
``OUT/plots/*.png``, and prints the markdown tables.

Example:
    geosane evaluate --config demo --out runs/demo-eval --model runs/small/model --collection collection/ \\
        [--workers 2] [--no-resume] [--tasks landsat8-cloud-segmentation] [--starts scratch,geosane:kde] [--seeds 0,1]

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
    parser.add_argument("--config", required=True, help="experiment YAML, or a packaged name (demo, quick)")
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geosane_hf.evaluation.experiment import ExperimentConfigError, load_experiment_config, run_experiment

    try:
        config = load_experiment_config(args.config)
        config = config.with_geosane(model=args.model, collection=args.collection, store=args.store)
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
