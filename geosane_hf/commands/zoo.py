"""`geosane zoo train`: train the offline population of small remote-sensing models.

Example:
    $ geosane zoo train --out zoo/ --quick
"""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `geosane zoo` and its `train` action."""
    parser = subparsers.add_parser(
        "zoo",
        help="train the offline population of small RS models",
        description="The population of small CNNs trained here on packaged remote-sensing data (docs/zoo.md).",
    )
    actions = parser.add_subparsers(dest="zoo_action", metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="train (or resume) the population",
        description="Train Statlog-Landsat CNNs and Landsat-8 cloud-segmentation ResNet/MobileNet-style nets; "
        "runs already saved in --out are skipped.",
    )
    train.add_argument("--out", default="zoo", help="output folder (index.json + models/*.safetensors)")
    train.add_argument("--quick", action="store_true", help="a small population of short runs (< 1 minute)")
    train.add_argument(
        "--num-models", type=int, default=None, help="number of training runs (default 150; 6 with --quick)"
    )
    train.add_argument("--seed", type=int, default=0, help="population seed (the plan and weights depend on it)")
    train.add_argument(
        "--preset",
        default="mixed",
        choices=("mixed", "statlog-w8"),
        help="mixed: every family (default); statlog-w8: one layout only, the zoo experiment's population",
    )
    train.add_argument(
        "--checkpoints-per-run",
        type=int,
        default=2,
        help="models saved per run at evenly spaced epochs, the last being the final model",
    )
    train.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="training processes, one thread each (results do not depend on it)",
    )
    train.set_defaults(func=run)

    def print_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=print_help)


def run(args: argparse.Namespace) -> int:
    """Trains the population and prints the accuracy distribution per architecture."""
    from geosane_hf.collection.zoo import ZooConfig, summarize, train_zoo

    result = train_zoo(
        ZooConfig(
            out_dir=args.out,
            num_models=args.num_models,
            seed=args.seed,
            quick=args.quick,
            preset=args.preset,
            checkpoints_per_run=args.checkpoints_per_run,
            workers=args.workers,
        )
    )
    print(
        f"{len(result.records)} models from {result.trained_runs + result.skipped_runs} runs "
        f"({result.trained_runs} trained, {result.skipped_runs} already on disk) in {result.seconds:.1f} s; "
        f"index: {result.index_path}"
    )
    print(
        f"{'architecture':<16}{'dataset':<17}{'metric':<9}{'ckpt':<7}{'n':>4}{'min':>8}{'median':>8}{'max':>8}  params"
    )
    for row in summarize(result.records):
        print(
            f"{row['architecture']:<16}{row['dataset']:<17}{row['metric']:<9}{'final' if row['final'] else 'mid':<7}"
            f"{row['models']:>4}{row['min']:>8.4f}{row['median']:>8.4f}{row['max']:>8.4f}  "
            f"{row['params'][0]}-{row['params'][1]}"
        )
    return 0
