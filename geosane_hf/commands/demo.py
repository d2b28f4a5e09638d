"""``geosane demo``: the offline end-to-end demo (``make demo``), see :mod:`geosane_hf.experiments.demo`.

Trains the offline population, collects it with the packaged real checkpoints, tokenizes it into Parquet shards,
trains the ``small`` GeoSANE through Accelerate, publishes it as ``geosane/base`` to the local Hub cache, generates
weights for two prompts, publishes them as timm repos, fine-tunes every start against the baselines and runs the zoo
experiment. Every stage resumes. ``--quick`` is the few-minute variant (what the tests run).

Example:
    $ geosane demo                 # ~20 minutes on 2 cores, results in runs/demo/results.md
    $ geosane demo --quick --out runs/demo-quick
    $ geosane demo --only packaged # just the packaged-checkpoint round-trip table
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Run the offline end-to-end demo (resumable).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default=None, help="Output folder (default runs/demo, or runs/demo-quick).")
    parser.add_argument("--quick", action="store_true", help="The few-minute variant (quick zoo, short training).")
    parser.add_argument("--only", default=None, help="Comma-separated stages to run (their inputs must exist).")
    parser.add_argument("--no-resume", action="store_true", help="Redo every stage instead of skipping done ones.")
    parser.add_argument("--zoo-runs", type=int, default=40, help="Population runs (2 checkpoints each).")
    parser.add_argument("--train-steps", type=int, default=None, help="Override the training config's num_steps.")
    parser.add_argument("--workers", type=int, default=2, help="Processes for the population and fine-tuning.")
    parser.add_argument("--repo-id", default="geosane/base", help="Name of the trained model in the Hub cache.")
    parser.add_argument("--push-to-hub", default=None, help="Also push the trained model to this repo (HF_ENDPOINT).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bars.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from geosane_hf.experiments.demo import DemoConfig, run_demo

    config = DemoConfig(
        out_dir=args.out or ("runs/demo-quick" if args.quick else "runs/demo"),
        quick=args.quick,
        zoo_runs=args.zoo_runs,
        train_steps=args.train_steps,
        workers=args.workers,
        repo_id=args.repo_id,
        push_to_hub=args.push_to_hub,
        resume=not args.no_resume,
        progress=not args.no_progress,
    )
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    result = run_demo(config, only=only)
    print(f"\n{result.report.read_text()}")
    print(f"demo finished in {result.seconds / 60:.1f} min; report: {result.report}")
    return 0
