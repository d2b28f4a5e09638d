"""Training throughput of training/train.py's step (data + augmentation + forward/backward + AdamW), next to the
GEMM ceiling measured in the same run.

Rows:
- ``1 process x 2 threads``: the real step in-process: sample windows, permute/noise/erase two views, collate, the
  model's loss, backward, clipping, AdamW. Timed per step (best of ``--repeats`` after warm-up), interleaved with the
  GEMM ceiling of the same step (``benchmarks/model_speed.py``'s ``gemm_plan``/``gemm_step``: every Linear and the
  attention matmuls, forward and backward) so both see the same background load.
- ``2 processes x 1 thread``: ``accelerate launch --multi_gpu --num_processes 2`` (gloo DDP) of training/train.py on
  the same data; the rate is the script's own training-loop rate (window tokens of all ranks per second), against
  the same 2-thread ceiling. It shows what DDP (all-reduce, a second Python process) costs on 2 cores.
- ``step on one fixed batch``: the same step (loss, backward, clipping, AdamW) on one batch of real windows made
  once: the step without its data path, so that the data path's share is read off in the same run.
- ``data path only``: make_batch alone, to show that the data path is not the bottleneck.

Tokens are window tokens of both views (``2 * batch * window`` per step, as model_speed counts them). On a shared
machine absolute rates are noisy; the ratio to the same-run ceiling is the figure to compare.

Usage:
    python benchmarks/train_speed.py --quick
    python benchmarks/train_speed.py --preset small --batch-size 8 --dataset DATASET_DIR
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from model_speed import add_allocator_flag, apply_allocator_flag, gemm_plan, gemm_step, timed  # noqa: E402

from geosane_hf.augmentations import TwoViewConfig  # noqa: E402
from geosane_hf.modeling import GeoSANEModel  # noqa: E402
from training.config import TrainingConfig  # noqa: E402
from training.data import WindowSampler, load_training_data, make_augmenters, make_batch  # noqa: E402
from training.launch import cpu_ddp_command  # noqa: E402
from training.train import build_model_config, build_optimizer  # noqa: E402


def synthetic_dataset(folder: Path) -> Path:
    """A small dataset of population architectures (permutable) + one larger MLP, built with the real builder."""
    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.collection.architectures import build_architecture
    from geosane_hf.collection.collector import collect
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset
    from geosane_hf.collection.manifest import CollectionManifest

    entries = []
    torch.manual_seed(0)
    for i, (name, kwargs) in enumerate(
        [("statlog_cnn", {"in_chans": 4, "num_classes": 6, "width": 16}), ("tiny_resnet", {"width": 16, "depth": 2})]
        * 3
    ):
        model = build_architecture(name, **kwargs)
        save_safetensors(model.state_dict(), folder / f"m{i}.safetensors")
        arch = {"library": "geosane", "name": name, "kwargs": kwargs}
        entries.append(
            {"id": f"{name}-{i}", "source": {"kind": "local", "path": f"m{i}.safetensors"}, "architecture": arch}
        )
    save_safetensors({"fc.weight": torch.randn(256, 2000), "fc.bias": torch.zeros(256)}, folder / "big.safetensors")
    entries.append({"id": "big-mlp", "source": {"kind": "local", "path": "big.safetensors"}})
    manifest = CollectionManifest.from_dict({"name": "bench", "models": entries}, root=folder)
    collect(manifest, folder / "collection", progress=False)
    build_dataset(folder / "collection", folder / "dataset", DatasetBuildConfig(), progress=False)
    return folder / "dataset"


def bench_single(dataset: str, config: TrainingConfig, threads: int, repeats: int, warmup: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    model_config = build_model_config(config)
    window = config.window_size or model_config.window_size
    data = load_training_data(dataset, token_size=model_config.token_size, permute=config.permute)
    torch.manual_seed(0)
    model = GeoSANEModel(model_config).train()
    optimizer = build_optimizer(model, config)
    sampler = WindowSampler([m.num_tokens for m in data.train], window, config.weighting, seed=0)
    rng = torch.Generator().manual_seed(1)
    augmenters = make_augmenters(
        TwoViewConfig(noise_sigma=config.noise_sigma, erase_rate=config.erase_rate, tokenizer_mode=data.mode)
    )
    plan = gemm_plan(
        model_config.__class__(**{**model_config.to_dict(), "window_size": window}), 2 * config.batch_size
    )
    ceiling_step = gemm_step(plan, training=True)

    def data_step():
        return make_batch(data.train, sampler.draw(config.batch_size), window, augmenters, rng)

    def model_step(batch):
        optimizer.zero_grad(set_to_none=True)
        model(**batch.model_inputs()).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    def train_step():
        model_step(data_step())

    fixed_batch = data_step()  # real windows (padding included) for the step without its data path

    def fixed_step():
        model_step(fixed_batch)

    for _ in range(warmup):
        train_step()
        ceiling_step()
    best_train = best_ceiling = best_data = best_fixed = float("inf")
    for _ in range(repeats):
        best_train = min(best_train, timed(train_step)[0])
        best_ceiling = min(best_ceiling, timed(ceiling_step)[0])
        best_data = min(best_data, timed(data_step)[0])
        best_fixed = min(best_fixed, timed(fixed_step)[0])
    tokens = 2 * config.batch_size * window
    flops = plan.flops(training=True)
    return {
        "tokens_per_s": tokens / best_train,
        "achieved_gflops": flops / best_train / 1e9,
        "ceiling_gflops": flops / best_ceiling / 1e9,
        "data_tokens_per_s": tokens / best_data,
        "fixed_tokens_per_s": tokens / best_fixed,
        "flops": flops,
        "tokens": tokens,
    }


def bench_ddp(dataset: str, config_path: Path, steps: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        command, env = cpu_ddp_command(
            [
                str(REPO / "training" / "train.py"),
                "--config",
                str(config_path),
                "--dataset",
                dataset,
                "--output_dir",
                f"{tmp}/run",
                "--no_tensorboard",
                "--cpu",
                "--set",
                "torch_threads=1",
                "--set",
                f"num_steps={steps}",
                "--set",
                "eval_every=0",
                "--set",
                "checkpoint_every=0",
                "--set",
                "holdout_every=0",
                "--set",
                "log_every=0",
            ],
            hf_home=tmp,
        )
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    match = re.search(r"([\d,]+) tokens/s", done.stdout)
    if done.returncode != 0 or match is None:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return float(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="model preset (tiny | small | base-v1)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per step")
    parser.add_argument("--window-size", type=int, default=None, help="tokens per window (default: the preset's)")
    parser.add_argument("--dataset", default=None, help="tokenized-weights dataset (default: a synthetic one)")
    parser.add_argument("--repeats", type=int, default=8, help="timed repeats (best is kept)")
    parser.add_argument("--ddp-steps", type=int, default=30, help="steps of the 2-process run")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process row")
    parser.add_argument("--quick", action="store_true", help="3 repeats, 10 DDP steps")
    add_allocator_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.ddp_steps = 3, 10
    allocator = apply_allocator_flag(args)
    with tempfile.TemporaryDirectory() as tmp:
        dataset = args.dataset or str(synthetic_dataset(Path(tmp)))
        values = {"model_preset": args.preset, "batch_size": args.batch_size, "window_size": args.window_size}
        config = TrainingConfig.from_dict(values)
        two = bench_single(dataset, config, threads=2, repeats=args.repeats, warmup=2)
        one = bench_single(dataset, config, threads=1, repeats=args.repeats, warmup=1)
        ddp = None
        if not args.no_ddp:
            config_path = Path(tmp) / "bench.yaml"
            config_path.write_text("".join(f"{k}: {'null' if v is None else v}\n" for k, v in values.items()))
            ddp = bench_ddp(dataset, config_path, args.ddp_steps)
    flops_per_token = two["flops"] / two["tokens"]
    print(
        f"preset {args.preset}, batch {args.batch_size} windows x 2 views, fp32, load average "
        f"{os.getloadavg()[0]:.1f} (shared machine: absolute rates are noisy, compare the ratios); allocator: "
        f"{allocator} (the 2-process row runs train.py, which always tunes it)"
    )
    print("| setup | tokens/s | GFLOP/s | GEMM ceiling GFLOP/s (same run) | % of ceiling |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        (
            "1 process x 2 threads (data + augmentation + step)",
            two["tokens_per_s"],
            two["ceiling_gflops"],
            "2 threads",
        ),
        (
            "1 process x 2 threads, step on one fixed batch (no data path)",
            two["fixed_tokens_per_s"],
            two["ceiling_gflops"],
            "2 threads",
        ),
        ("1 process x 1 thread (data + augmentation + step)", one["tokens_per_s"], one["ceiling_gflops"], "1 thread"),
        (
            "1 process x 1 thread, step on one fixed batch (no data path)",
            one["fixed_tokens_per_s"],
            one["ceiling_gflops"],
            "1 thread",
        ),
    ]
    if ddp is not None:
        rows.append(
            ("2 processes x 1 thread (gloo DDP, train.py loop)", ddp, 2 * one["ceiling_gflops"], "2 x 1 thread")
        )
    for name, rate, ceiling, what in rows:
        gflops = rate * flops_per_token / 1e9
        print(f"| {name} | {rate:,.0f} | {gflops:.1f} | {ceiling:.1f} ({what}) | {100 * gflops / ceiling:.0f}% |")
    print(
        f"| data path only, 2 threads (sample + permute + noise + erase) | {two['data_tokens_per_s']:,.0f} | - | - | - |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
