"""What the halo buys: reconstruction R^2 and encode + decode time of whole models for several halo sizes.

``encode_long`` / ``decode_long`` run long sequences in windows of ``window_size`` content tokens, each with
``halo_size`` context tokens on both sides that are dropped again after the stack. The halo costs compute (with 16 on
a window of 128 a pass is 25% longer) and buys context at the window edges. GeoSANE models are trained on windows
without halo, so how much that context is worth is an empirical question: this script answers it for a trained
model on every model of a tokenized-weights dataset longer than two windows.

R^2 is per model over its real (unmasked) token values, 1 - SSE / SST, then averaged; time is the wall time of
encode + decode of all those models, in the same run for every halo (interleaved, best of ``--repeats``).

Usage:
    python benchmarks/halo_quality.py --model runs/demo/train/model --dataset runs/demo/dataset
    python benchmarks/halo_quality.py --model MODEL --dataset DATASET --halos 0 4 16 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from geosane_hf.modeling import GeoSANEModel
from geosane_hf.runtime import tune_cpu_allocator
from training.data import load_training_data


@torch.inference_mode()
def reconstruct(model: GeoSANEModel, tokenized, halo: int, batch_size: int) -> torch.Tensor:
    """Token-space R^2 of one model's encode + decode with ``halo`` context tokens per side."""
    types = tokenized.layer_types if model.config.num_layer_types > 0 else None
    kwargs = {"batch_size": batch_size, "halo_size": halo}
    latents = model.encode_long(tokenized.tokens, tokenized.positions, tokenized.mask, types, **kwargs)  # [N, L]
    recon = model.decode_long(latents, tokenized.positions, types, tokenized.mask.any(-1), **kwargs)  # [N, T]
    x = tokenized.tokens.double()[tokenized.mask]
    y = recon.double()[tokenized.mask]
    return 1.0 - (y - x).pow(2).sum() / (x - x.mean()).pow(2).sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained GeoSANE model folder (save_pretrained)")
    parser.add_argument("--dataset", required=True, help="a tokenized-weights dataset (geosane build-dataset)")
    parser.add_argument("--halos", type=int, nargs="+", default=[0, 4, 8, 16, 32], help="halo sizes to compare")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per halo (best is kept)")
    args = parser.parse_args(argv)
    for flag, path in (("--model", args.model), ("--dataset", args.dataset)):
        if not Path(path).is_dir():
            parser.error(
                f"expected {flag} to be a folder, got {path!r}; `make demo` writes runs/demo/train/model and "
                "runs/demo/dataset"
            )
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    model = GeoSANEModel.from_pretrained(args.model).eval()
    window = model.config.window_size
    data = load_training_data(args.dataset, token_size=model.config.token_size, permute=False)
    models = [m for m in data.train + data.holdout if m.num_tokens > 2 * window]
    if not models:
        print(f"no model in {args.dataset} is longer than two windows ({2 * window} tokens): nothing to compare")
        return 1
    r2 = {
        halo: torch.stack([reconstruct(model, m.tokenized, halo, args.batch_size) for m in models])
        for halo in tqdm(args.halos, desc="R^2 per halo", unit="halo")
    }
    seconds = dict.fromkeys(args.halos, float("inf"))
    for _ in tqdm(range(args.repeats), desc="timing", unit="round"):
        for halo in args.halos:  # interleaved: every halo sees the same background load
            start = time.perf_counter()
            for m in models:
                reconstruct(model, m.tokenized, halo, args.batch_size)
            seconds[halo] = min(seconds[halo], time.perf_counter() - start)
    tokens = sum(m.num_tokens for m in models)
    base = args.halos[0]
    print(
        f"\nmodel {args.model} (window {window}, config halo {model.config.halo_size}), {len(models)} models of "
        f"{min(m.num_tokens for m in models):,}-{max(m.num_tokens for m in models):,} tokens ({tokens:,} in all), "
        f"{args.threads} thread(s), {args.batch_size} windows per pass"
    )
    print(f"| halo | tokens per pass | mean R^2 | median R^2 | min R^2 | seconds | time / halo {base} |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for halo in args.halos:
        values = r2[halo]
        print(
            f"| {halo} | {window + 2 * halo} | {values.mean():.5f} | {values.median():.5f} | {values.min():.5f} | "
            f"{seconds[halo]:.1f} | {seconds[halo] / seconds[base]:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
