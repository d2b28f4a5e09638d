"""`geosane zoo-experiment`: generated models of a population layout vs matched-distance noise (docs/zoo_experiment.md).

Example:
    $ geosane zoo-experiment --model runs/small/model --zoo zoo/ --out results/zoo_experiment
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `geosane zoo-experiment`."""
    parser = subparsers.add_parser(
        "zoo-experiment",
        help="zero-shot / 1-epoch accuracy of generated population models vs matched-distance noise",
        description="For one layout of the trained population: encode its members, sample and decode new models, "
        "and score them zero-shot and after one fixed fine-tuning epoch next to the population, encode->decode "
        "reconstructions, random init and anchor + noise at the same L2 distance; plus the noise-vs-distance curve "
        "and weight- vs latent-space interpolation. Writes zoo_experiment.{md,json}, noise_curve.png, "
        "interpolation.png.",
    )
    parser.add_argument("--model", required=True, help="trained GeoSANE model folder or Hub id")
    parser.add_argument("--zoo", required=True, help="population folder (`geosane zoo train --out DIR`)")
    parser.add_argument("--out", required=True, help="output folder for the report")
    parser.add_argument("--architecture", default="statlog_cnn", help="zoo architecture (default statlog_cnn)")
    parser.add_argument(
        "--kwargs",
        default=None,
        help="architecture kwargs selecting one layout, JSON, e.g. '{\"width\": 8}' (default: the layout with the "
        "most members)",
    )
    parser.add_argument("--checkpoints", choices=("all", "final"), default="all", help="population members used")
    parser.add_argument(
        "--anchors", choices=("train", "all"), default="train", help="anchors: members GeoSANE trained on, or all"
    )
    parser.add_argument(
        "--holdout-ids", nargs="*", default=None, help="GeoSANE's held-out ids (default: read from the model card)"
    )
    parser.add_argument("--dataset", default=None, help="the tokenized dataset GeoSANE was trained on (optional)")
    parser.add_argument("--sampler", choices=("kde", "anchor-noise"), default="kde")
    parser.add_argument("--noise-scale", type=float, default=0.1, help="relative to the anchors' latent std")
    parser.add_argument("--num-samples", type=int, default=8, help="generated models per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=3e-3)
    parser.add_argument("--no-recalibrate-bn", action="store_true", help="score BN statistics as decoded")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the experiment and prints the Markdown report."""
    from geosane_hf.errors import UsageError
    from geosane_hf.experiments.zoo.run import FinetuneProtocol, ZooExperimentConfig, run_zoo_experiment

    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else None
    except json.JSONDecodeError as error:
        raise UsageError(
            f"expected --kwargs as a JSON object, e.g. '{{\"width\": 8}}', got {args.kwargs!r}"
        ) from error
    if kwargs is not None and not isinstance(kwargs, dict):
        raise UsageError(f"expected --kwargs as a JSON object, got {args.kwargs!r}")
    config = ZooExperimentConfig(
        architecture=args.architecture,
        architecture_kwargs=kwargs,
        checkpoints=args.checkpoints,
        anchors=args.anchors,
        holdout_ids=args.holdout_ids,
        dataset_dir=args.dataset,
        sampler=args.sampler,
        noise_scale=args.noise_scale,
        num_samples=args.num_samples,
        seeds=tuple(args.seeds),
        recalibrate_bn=not args.no_recalibrate_bn,
        finetune=FinetuneProtocol(epochs=args.finetune_epochs, lr=args.finetune_lr),
        progress=not args.no_progress,
    )
    result = run_zoo_experiment(args.model, args.zoo, args.out, config)
    print(result.to_markdown())
    print(f"\nwritten: {', '.join(result.files.values())}")
    return 0
