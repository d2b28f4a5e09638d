"""`geosane zoo-experiment`: generated models of a population layout vs matched-distance noise (docs/zoo_experiment.md).

Example:
    $ geosane zoo-experiment --out runs/zoo-experiment             # everything: population, autoencoder, experiment
    $ geosane zoo-experiment --model runs/small/model --zoo zoo/ --out results/zoo_experiment   # the experiment only
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `geosane zoo-experiment`."""
    parser = subparsers.add_parser(
        "zoo-experiment",
        help="generated population models vs matched-distance noise (quality-novelty curve, targets)",
        description="Without --model/--zoo: train a population of one layout, collect it, build the weights "
        "dataset, train the zoo autoencoder with accelerate launch and run the experiment, all into --out "
        "(resumable; `make zoo-experiment`). With --model and --zoo: only the experiment, for one layout of that "
        "population: align the members, encode them, sample and decode new models, score them zero-shot and after "
        "one fixed fine-tuning epoch next to the population, reconstructions, random init and anchor + noise at the "
        "same L2 distance; the quality-novelty curve, weight- vs latent-space interpolation and the targets. Writes "
        "zoo_experiment.{md,json}, quality_novelty.png, interpolation.png.",
    )
    parser.add_argument("--model", default=None, help="trained GeoSANE model folder or Hub id (experiment only)")
    parser.add_argument(
        "--zoo", default=None, help="population folder, `geosane zoo train --out DIR` (experiment only)"
    )
    parser.add_argument("--out", default="runs/zoo-experiment", help="output folder")
    parser.add_argument(
        "--runs", type=int, default=150, help="full run: population training runs (2 checkpoints each)"
    )
    parser.add_argument("--train-steps", type=int, default=None, help="full run: autoencoder steps (default: config)")
    parser.add_argument("--workers", type=int, default=2, help="full run: population training processes")
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
    parser.add_argument("--sampler", choices=("interpolate", "kde"), default="interpolate")
    parser.add_argument(
        "--interpolation",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="interpolate: weight t of the second anchor drawn from U(MIN, MAX) (default: ZooExperimentConfig's)",
    )
    parser.add_argument("--noise-scale", type=float, default=0.1, help="kde: bandwidth relative to the latent std")
    parser.add_argument("--no-align", action="store_true", help="do not weight-match the members first")
    parser.add_argument("--num-samples", type=int, default=None, help="generated models per seed (default 16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=3e-3)
    parser.add_argument("--no-recalibrate-bn", action="store_true", help="score BN statistics as decoded")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the experiment (or the whole pipeline) and prints the Markdown report."""
    from geosane_hf.errors import UsageError
    from geosane_hf.experiments.zoo.config import FinetuneProtocol, ZooExperimentConfig

    try:
        kwargs = json.loads(args.kwargs) if args.kwargs else None
    except json.JSONDecodeError as error:
        raise UsageError(
            f"expected --kwargs as a JSON object, e.g. '{{\"width\": 8}}', got {args.kwargs!r}"
        ) from error
    if kwargs is not None and not isinstance(kwargs, dict):
        raise UsageError(f"expected --kwargs as a JSON object, got {args.kwargs!r}")
    if (args.model is None) != (args.zoo is None):
        raise UsageError(
            "expected both --model and --zoo (the experiment on a trained model and population) or neither (the "
            f"whole pipeline into --out), got only {'--model' if args.model else '--zoo'}"
        )
    defaults = ZooExperimentConfig()
    config = ZooExperimentConfig(
        architecture=args.architecture,
        architecture_kwargs=kwargs,
        checkpoints=args.checkpoints,
        anchors=args.anchors,
        holdout_ids=args.holdout_ids,
        dataset_dir=args.dataset,
        align=not args.no_align,
        sampler=args.sampler,
        interpolation=tuple(args.interpolation) if args.interpolation else defaults.interpolation,
        noise_scale=args.noise_scale,
        num_samples=args.num_samples or defaults.num_samples,
        seeds=tuple(args.seeds),
        recalibrate_bn=not args.no_recalibrate_bn,
        finetune=FinetuneProtocol(epochs=args.finetune_epochs, lr=args.finetune_lr),
        progress=not args.no_progress,
    )
    if args.model is None:
        from pathlib import Path

        from geosane_hf.experiments.zoo.pipeline import ZooPipelineConfig, run_zoo_pipeline

        pipeline = ZooPipelineConfig(
            out_dir=args.out,
            runs=args.runs,
            train_steps=args.train_steps,
            workers=args.workers,
            experiment=config,
            progress=not args.no_progress,
        )
        state = run_zoo_pipeline(pipeline)
        report = Path(state["experiment"]["summary"]["report"])
        print(report.read_text())
        print(f"\nwritten: {report.parent}, {Path(args.out) / 'zoo_experiment.json'}")
        return 0
    from geosane_hf.experiments.zoo.run import run_zoo_experiment

    result = run_zoo_experiment(args.model, args.zoo, args.out, config)
    print(result.to_markdown())
    print(f"\nwritten: {', '.join(result.files.values())}")
    return 0
