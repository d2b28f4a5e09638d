"""`geosane experiment`: leave one data source out; GeoSANE's recommended start against every baseline
(``make experiment``; docs/experiment.md).

Example:
    $ geosane experiment --out runs/experiment --docs docs     # every fold (~70 min on 2 cores), resumable
    $ geosane experiment --quick --out runs/experiment-quick    # the same pipeline in a few minutes
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `geosane experiment`."""
    parser = subparsers.add_parser(
        "experiment",
        help="leave one data source out: GeoSANE's recommended start vs every baseline (win/tie/loss)",
        description="Per data source of the packaged `heldout` comparison (Statlog, Landsat-8, SpaceNet): collect a "
        "population without it (packaged real checkpoints, the trained zoo, ImageNet Lite0/Lite2 fine-tuned on the "
        "other sources' tasks, checked by image content hash), tokenize it, train a GeoSANE with accelerate launch "
        "and fine-tune every start on the source's tasks; then count GeoSANE's wins, ties and losses per baseline. "
        "Writes experiment.md / experiment.json into --out; resumable.",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/experiment, or runs/experiment-quick)"
    )
    parser.add_argument("--quick", action="store_true", help="the few-minute variant (one fold, tiny members)")
    parser.add_argument(
        "--config", default=None, help="the comparison per fold: packaged name or YAML (default heldout)"
    )
    parser.add_argument("--only", default=None, help="comma-separated stages to run (their inputs must exist)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the zoo and the fine-tuning runs")
    parser.add_argument("--member-epochs", type=int, default=None, help="fine-tuning epochs per member (default 6)")
    parser.add_argument("--docs", default=None, help="also write DOCS/experiment.md and its figures")
    parser.add_argument("--no-resume", action="store_true", help="redo every stage instead of skipping done ones")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs (or resumes) the experiment and prints the win/tie/loss table."""
    from geosane_hf.experiments.heldout import HeldoutConfig, run_heldout
    from geosane_hf.experiments.heldout.report import write_docs

    config = HeldoutConfig(
        out_dir=args.out or ("runs/experiment-quick" if args.quick else "runs/experiment"),
        quick=args.quick,
        workers=args.workers,
        resume=not args.no_resume,
        progress=not args.no_progress,
        experiment=args.config,
        member_epochs=args.member_epochs,
    )
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    result = run_heldout(config, only=only)
    if result.report is None:
        print(f"stages done in {result.seconds / 60:.1f} min; no fold evaluated yet, so no report")
        return 0
    if args.docs:
        print(f"docs: {write_docs(config, args.docs)}")
    print(result.report.read_text().split("\n## Every comparison")[0])
    print(f"experiment finished in {result.seconds / 60:.1f} min; report: {result.report}")
    return 0
