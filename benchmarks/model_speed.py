"""GeoSANEModel speed on this machine, next to the GEMM ceiling measured in the same run.

For each configuration it times, in fp32:
- inference: ``encode`` + ``decode`` of ``batch`` windows (no grad);
- training: ``forward`` with two views (reconstruction + NT-Xent loss) + ``backward`` (no optimizer step);
and, for the same token count, the plain GEMMs the model cannot avoid (every Linear of the model as
``F.linear`` on ``[tokens, in]``, the two attention matmuls per layer as ``bmm``; for training also the two
backward GEMMs of each). FLOPs are counted the same way for both (2 * in * out per token per Linear, 4 * N * d per
token per attention layer, x3 for training), so ``achieved / ceiling`` is the share of the physical GEMM rate the
model reaches. Then it encodes + decodes a whole ViT-B/16's worth of random tokens (~376k tokens of 230) with
``small`` through ``encode_long`` / ``decode_long`` and reports time and peak RSS.

Timings are the best of ``--repeats`` runs (other processes only ever add time), model steps and GEMM-ceiling steps
interleaved so that both see the same background load. The ratio is also given by process CPU time, which a
descheduled thread does not inflate. On a shared machine the absolute numbers are noisy; the
ratio to the same-run ceiling is the figure to compare.

Usage:
    python benchmarks/model_speed.py                 # tiny, small, reference (d=256 4+4 w256 b8), ViT-B/16
    python benchmarks/model_speed.py --quick         # fewer repeats, 40k-token "ViT"
    python benchmarks/model_speed.py --configs tiny small --compile --vit-tokens 0   # eager and torch.compile
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.runtime import describe_allocator, tune_cpu_allocator

REFERENCE = {  # the configuration the released implementation was timed at (RESOURCES.md): ~2,760 train tokens/s
    "token_size": 230,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_encoder_layers": 4,
    "num_decoder_layers": 4,
    "latent_size": 128,
    "window_size": 256,
    "halo_size": 32,
    "position_sum_dtype": "float32",
}
ORIGINAL_TRAIN_TOKENS_PER_S = 2760
QUIET_GEMM_GFLOPS = (125, 156)  # fp32 GEMM with 2 threads on an idle machine of this class (RESOURCES.md)
VIT_B16_TOKENS = 376_000


class PeakRSS:
    """Samples this process's resident set size in a thread (torch ops release the GIL) and keeps the peak."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


@dataclass
class GemmPlan:
    """The GEMMs of one step: (kind, shape) -> count, plus their FLOPs."""

    linears: list[tuple[int, int, bool, int]]  # (in, out, bias, how many)
    attention: tuple[int, int, int, int]  # (batch * heads, N, head_dim, layers)
    tokens: int
    windows: int

    def flops(self, training: bool) -> float:
        forward = sum(2.0 * self.tokens * i * o * n for i, o, _, n in self.linears)
        bh, length, hd, layers = self.attention
        forward += layers * 2 * (2.0 * bh * length * length * hd)
        return forward * (3 if training else 1)


def gemm_plan(config: GeoSANEConfig, windows: int) -> GemmPlan:
    d, inter, layers = (
        config.hidden_size,
        config.intermediate_size,
        config.num_encoder_layers + config.num_decoder_layers,
    )
    linears = [
        (config.token_size, d, config.io_bias, 1),
        (d, 3 * d, config.attention_bias, layers),
        (d, d, config.attention_bias, layers),
        (d, inter, config.mlp_bias, layers),
        (inter, d, config.mlp_bias, layers),
        (d, config.latent_size, config.io_bias, 1),
        (config.latent_size, d, config.io_bias, 1),
        (d, config.token_size, config.io_bias, 1),
    ]
    heads = config.num_attention_heads
    attention = (windows * heads, config.window_size, d // heads, layers)
    return GemmPlan(linears, attention, windows * config.window_size, windows)


def gemm_step(plan: GemmPlan, training: bool):
    """A function running the plan's GEMMs once: the ceiling for one model step.

    Every call gets its own input, weight and gradient tensors (as the model's layers do), so the ceiling does not
    profit from operands that stay hot in cache across repeated calls.
    """
    m = plan.tokens
    calls = []
    for in_features, out_features, bias, count in plan.linears:
        for _ in range(count):
            x, w = torch.randn(m, in_features), torch.randn(out_features, in_features)
            b = torch.randn(out_features) if bias else None
            calls.append(lambda x=x, w=w, b=b: F.linear(x, w, b))
            if training:
                grad = torch.randn(m, out_features)
                calls.append(lambda grad=grad, w=w: grad @ w)  # grad_input  [M, out] @ [out, in]
                calls.append(lambda grad=grad, x=x: grad.t() @ x)  # grad_weight [out, M] @ [M, in]
    bh, length, hd, layers = plan.attention
    # forward: scores = q @ k^T and probs @ v; backward: four bmm of the same sizes (two more rounds of the pair)
    for _ in range(layers * (3 if training else 1)):
        q, k = torch.randn(bh, length, hd), torch.randn(bh, hd, length)
        probs, v = torch.randn(bh, length, length), torch.randn(bh, length, hd)
        calls += [lambda q=q, k=k: torch.bmm(q, k), lambda probs=probs, v=v: torch.bmm(probs, v)]

    def run():
        for call in calls:
            call()

    return run


def make_windows(config: GeoSANEConfig, windows: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(windows, config.window_size, config.token_size, generator=generator)
    n = torch.arange(config.window_size)
    positions = torch.stack([n + 5000, n // 64, n % 64], -1).expand(windows, -1, -1).contiguous()
    mask = torch.ones_like(tokens, dtype=torch.bool)
    return tokens, positions, mask


@dataclass
class Row:
    name: str
    mode: str
    tokens_per_s: float
    achieved_gflops: float
    ceiling_gflops: float
    peak_rss_mb: float
    cpu_ratio: float
    flops_per_token: float

    @property
    def ratio(self) -> float:
        return self.achieved_gflops / self.ceiling_gflops


def bench_config(name: str, config: GeoSANEConfig, windows: int, repeats: int, compiled: bool = False) -> list[Row]:
    torch.manual_seed(0)
    model = GeoSANEModel(config)
    # torch.compile (inductor) fuses the elementwise work between the GEMMs; the GEMMs stay the same library calls.
    encode = torch.compile(model.encode, dynamic=False) if compiled else model.encode
    decode = torch.compile(model.decode, dynamic=False) if compiled else model.decode
    forward = torch.compile(model, dynamic=False) if compiled else model
    name = f"{name} (compiled)" if compiled else name
    tokens, positions, mask = make_windows(config, windows)
    tokens_2 = tokens * (1 + 0.1 * torch.randn_like(tokens))
    rows = []
    for mode in ("inference", "training"):
        training = mode == "training"
        plan = gemm_plan(config, 2 * windows if training else windows)
        if training:
            model.train()

            def step():
                model.zero_grad(set_to_none=True)
                forward(tokens, positions, mask, tokens_2=tokens_2).loss.backward()

        else:
            model.eval()

            def step():
                with torch.inference_mode():
                    decode(encode(tokens, positions, mask), positions)

        step_tokens = plan.tokens
        flops = plan.flops(training)
        head_in = config.window_size * config.latent_size
        head_flops = plan.windows * 2.0 * (head_in * config.projection_hidden_size + config.projection_hidden_size**2)
        flops_model = flops + (3 * head_flops if training else 0.0)
        ceiling = gemm_step(plan, training)
        if compiled:  # compile outside the timed and memory-traced steps
            start = time.perf_counter()
            step()
            print(f"  {name} {mode}: compiled in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        with PeakRSS() as rss:  # the first step from a cold state: its activations and gradients
            step()
        ceiling()  # warm-up
        model_times, ceiling_times = [], []
        for _ in range(repeats):  # interleaved, so both see the same background load
            model_times.append(timed(step))
            ceiling_times.append(timed(ceiling))
        model_time, ceiling_time = min(t[0] for t in model_times), min(t[0] for t in ceiling_times)
        model_cpu, ceiling_cpu = min(t[1] for t in model_times), min(t[1] for t in ceiling_times)
        # the ceiling covers the same FLOPs as the model's count (the per-window head is tiny; timed as part of it)
        ceiling_gflops = flops / ceiling_time / 1e9
        rows.append(
            Row(
                name=name,
                mode=mode,
                tokens_per_s=step_tokens / model_time,
                achieved_gflops=flops_model / model_time / 1e9,
                ceiling_gflops=ceiling_gflops,
                peak_rss_mb=(rss.peak - rss.start) / 2**20,
                cpu_ratio=(flops_model / model_cpu) / (flops / ceiling_cpu),
                flops_per_token=flops_model / step_tokens,
            )
        )
        print(
            f"  {name:<10} {mode:<9} {rows[-1].tokens_per_s:>10,.0f} tok/s  {rows[-1].achieved_gflops:6.1f} GFLOP/s"
            f"  ceiling {ceiling_gflops:6.1f}  ratio {rows[-1].ratio:5.1%} (CPU time {rows[-1].cpu_ratio:5.1%})",
            file=sys.stderr,
        )
    return rows


def bench_long(config: GeoSANEConfig, num_tokens: int, batch_size: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = GeoSANEModel(config).eval()
    tokens = torch.randn(num_tokens, config.token_size)
    n = torch.arange(num_tokens)
    positions = torch.stack([n, n // 2304, n % 2304], -1).to(torch.int32)  # ~2,304 tokens per ViT-B layer matrix
    mask = torch.ones_like(tokens, dtype=torch.bool)
    with PeakRSS() as rss:
        start = time.perf_counter()
        latents = model.encode_long(tokens, positions, mask, batch_size=batch_size)
        middle = time.perf_counter()
        decoded = model.decode_long(latents, positions, batch_size=batch_size)
        end = time.perf_counter()
    assert decoded.shape == tokens.shape
    return {
        "tokens": num_tokens,
        "encode_s": middle - start,
        "decode_s": end - middle,
        "tokens_per_s": num_tokens / (end - start),
        "peak_rss_gb": rss.peak / 2**30,
        "peak_rss_increase_gb": (rss.peak - rss.start) / 2**30,
        "input_gb": tokens.numel() * 4 / 2**30,
        "produced_gb": (decoded.numel() + latents.numel()) * 4 / 2**30,
    }


def add_allocator_flag(parser: argparse.ArgumentParser) -> None:
    """``--default-allocator``: the baseline for :func:`geosane_hf.runtime.tune_cpu_allocator` (shared by the
    speed benchmarks)."""
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="keep glibc's default malloc thresholds (the baseline for geosane_hf.runtime.tune_cpu_allocator)",
    )


def apply_allocator_flag(args: argparse.Namespace) -> str:
    """Tunes the allocator unless ``--default-allocator``; prints and returns what the process runs with."""
    allocator = "glibc defaults" if args.default_allocator else describe_allocator(tune_cpu_allocator())
    print(f"allocator: {allocator}", file=sys.stderr)
    return allocator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["tiny", "small", "reference"], help="presets or 'reference'")
    parser.add_argument("--batch", type=int, default=8, help="windows per step (training runs two views of each)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (best is kept)")
    parser.add_argument(
        "--vit-tokens", type=int, default=VIT_B16_TOKENS, help="tokens for the whole-model run (0: skip)"
    )
    parser.add_argument("--long-batch", type=int, default=8, help="windows per pass in encode_long/decode_long")
    parser.add_argument("--quick", action="store_true", help="2 repeats and a 40k-token whole-model run")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time each config under torch.compile (inductor; needs a C++ compiler)",
    )
    add_allocator_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 2)
        args.vit_tokens = min(args.vit_tokens, 40_000)
    allocator = apply_allocator_flag(args)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, batch {args.batch}", file=sys.stderr)

    rows: list[Row] = []
    for name in args.configs:
        config = GeoSANEConfig(**REFERENCE) if name == "reference" else GeoSANEConfig.from_preset(name)
        rows += bench_config(name, config, args.batch, args.repeats)
        if args.compile:
            rows += bench_config(name, config, args.batch, args.repeats, compiled=True)

    print(
        f"\nfp32, {args.threads} threads, {args.batch} windows per step (training: 2 views -> {2 * args.batch}); "
        f"allocator: {allocator}"
    )
    print(
        "| config | mode | tokens/s | achieved GFLOP/s | GEMM ceiling GFLOP/s | achieved / ceiling "
        "| same, by CPU time | peak RSS of one step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.name} | {row.mode} | {row.tokens_per_s:,.0f} | {row.achieved_gflops:.1f} | "
            f"{row.ceiling_gflops:.1f} | {row.ratio:.1%} | {row.cpu_ratio:.1%} | {row.peak_rss_mb:,.0f} MB |"
        )
    reference_rows = [row for row in rows if row.name == "reference" and row.mode == "training"]
    if reference_rows:
        row = reference_rows[0]
        low, high = (row.ratio * rate * 1e9 / row.flops_per_token for rate in QUIET_GEMM_GFLOPS)
        print(
            f"\nreference config training: {row.tokens_per_s:,.0f} tokens/s in this run (GEMM ceiling "
            f"{row.ceiling_gflops:.0f} GFLOP/s here vs {QUIET_GEMM_GFLOPS[0]}-{QUIET_GEMM_GFLOPS[1]} on a quiet machine "
            f"of this class); at {row.ratio:.0%} of a quiet ceiling that is {low:,.0f}-{high:,.0f} tokens/s, vs "
            f"~{ORIGINAL_TRAIN_TOKENS_PER_S:,} measured for the released implementation"
        )
    if args.vit_tokens:
        result = bench_long(GeoSANEConfig.from_preset("small"), args.vit_tokens, args.long_batch)
        print(
            f"\nwhole model, small preset: {result['tokens']:,} random tokens of 230 -> encode_long "
            f"{result['encode_s']:.1f} s + decode_long {result['decode_s']:.1f} s = {result['tokens_per_s']:,.0f} "
            f"tokens/s; peak RSS {result['peak_rss_gb']:.2f} GB (+{result['peak_rss_increase_gb']:.2f} GB during the "
            f"run: latents + output are {result['produced_gb']:.2f} GB; the {result['input_gb']:.2f} GB input was "
            "allocated before)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
