"""Weight-generation speed and memory with the ``small`` GeoSANE model, next to the GEMM ceiling of the same run.

For each prompt (default: resnet50, vit_base_patch16_224, swin_base_patch4_window7_224, mobilenetv2_100; 4 bands,
6 classes, random-init ``small`` model, prompt-noise sampler, one sample) it runs ``generate_weights``
``--repeats`` times and reports, per step (prompt loading, tokenize, encode, sample, decode, detokenize,
calibration_data = reading the packaged scene, calibrate = BatchNorm forward passes), the median over the repeats.
Next to it, the GEMM ceiling: the plain GEMMs that encode + decode of the *content* tokens cannot avoid
(``benchmarks/model_speed.py``'s ``gemm_plan`` / ``gemm_step``: every Linear and the two attention matmuls per layer
for ``ceil(N / window)`` windows of ``window`` tokens), timed in passes of ``--window-batch`` windows interleaved
with the generations (a few passes before and after each, median per pass, scaled to all windows). So
``ceiling / (encode + decode)`` counts the halo tokens as overhead; ``max`` is that ratio for a model that ran every
FLOP it must compute (halo context included) at the ceiling's rate.

Times are given by process CPU time as well as wall time: on this shared machine a descheduled process loses wall
time but not CPU time, so with one thread (the default) the CPU-time ratios are the robust ones. The load average
is printed with each row.

Steady state vs cold: the ``--repeats`` timed runs follow each other, so freed heap is reused as it is for the
ceiling's passes (the times are their medians); one more run after ``malloc_trim`` gives the memory figures and the
"cold total" (every activation page-faulted in anew, as in a process's first generation).

Memory: peak RSS above the RSS before the call (sampled every 2 ms, after ``malloc_trim`` so that freed heap from
an earlier call does not hide new allocations), in that last run (the first also pays one-time imports and the
scene read), against ``2 x prompt bytes + GeoSANE model bytes``; also the peak before BatchNorm calibration
started (calibration activations of 16 x 224 x 224 images do not scale with the prompt).

Calibration runs as in ``generate_weights`` (channels_last, ``pipeline_geosane.CALIBRATE_CHANNELS_LAST``);
``--calibrate-contiguous`` runs it in the contiguous format instead (the previous default, for comparison).

Usage:
    python benchmarks/generate_speed.py                       # the four prompts, 3 repeats, 1 thread
    python benchmarks/generate_speed.py --quick               # mobilenetv2_100 + resnet18, 2 repeats
    python benchmarks/generate_speed.py --prompts resnet50 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_speed import PeakRSS, add_allocator_flag, apply_allocator_flag, gemm_plan, gemm_step

from geosane_hf.generation import generate_weights, pipeline_geosane
from geosane_hf.generation.outputs import StepTimer
from geosane_hf.modeling import GeoSANEConfig, GeoSANEModel
from geosane_hf.runtime import release_freed_memory

PROMPTS = ["resnet50", "vit_base_patch16_224", "swin_base_patch4_window7_224", "mobilenetv2_100"]
STEPS = ["prompt", "tokenize", "encode", "sample", "decode", "detokenize", "calibration_data", "calibrate"]
OTHER = ["tokenize", "sample", "detokenize", "calibration_data", "calibrate"]


class CpuTimer(StepTimer):
    """``StepTimer`` that also records process CPU seconds per step (benchmark only)."""

    last: CpuTimer | None = None

    def __init__(self) -> None:
        super().__init__()
        self.cpu: dict[str, float] = {}
        self.spans: list[tuple[str, float, float]] = []  # (step, perf_counter start, end)
        CpuTimer.last = self

    @contextlib.contextmanager
    def __call__(self, name: str):
        start, wall = time.process_time(), time.perf_counter()
        try:
            with super().__call__(name):
                yield
        finally:
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - start
            self.spans.append((name, wall, time.perf_counter()))


class RssTrace(PeakRSS):
    """``PeakRSS`` that keeps every (time, RSS) sample, for the peak of each step."""

    def __init__(self, interval: float = 0.002):
        super().__init__(interval)
        self.samples: list[tuple[float, int]] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            self.samples.append((time.perf_counter(), rss))
            self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def peak_before(self, spans: list[tuple[str, float, float]], step: str) -> int:
        """The peak of the samples taken before ``step`` first started (all of them if it never ran)."""
        start = min((a for name, a, _ in spans if name == step), default=math.inf)
        return max((rss for t, rss in self.samples if t < start), default=self.start)


def trim_heap() -> None:
    """Returns freed heap pages to the OS, so that an RSS increase counts new allocations only."""
    gc.collect()
    release_freed_memory()


def flops_with_halo(config: GeoSANEConfig, num_tokens: int) -> tuple[float, float]:
    """(FLOPs the ceiling counts for the content tokens, FLOPs encode + decode must compute with their halos).

    Same counting as ``GemmPlan.flops`` (2 x in x out per token per Linear, 4 x N x d per token per attention
    layer). With halos every layer but the last of each stack runs on the whole context window; the last block's
    queries, MLP and the output projection run on the content rows only (what ``encode_long`` does).
    """
    d, inter = config.hidden_size, config.intermediate_size
    per_block = 2.0 * (d * 3 * d + d * d + 2 * d * inter)  # per token: c_attn, c_proj, MLP
    q_rows_block = 2.0 * (d * d + 2 * d * inter)  # the part of a block that only content queries need
    ends = {"encode": (config.token_size, config.latent_size), "decode": (config.latent_size, config.token_size)}
    layers = {"encode": config.num_encoder_layers, "decode": config.num_decoder_layers}
    content = computed = 0.0
    for start in range(0, num_tokens, config.window_size):
        end = min(start + config.window_size, num_tokens)
        w = end - start
        c = min(num_tokens, end + config.halo_size) - max(0, start - config.halo_size)
        for kind, (f_in, f_out) in ends.items():
            n = layers[kind]
            content += 2.0 * w * (f_in * d + d * f_out) + n * (w * per_block + 4.0 * w * config.window_size * d)
            if n == 0:
                computed += 2.0 * (c * f_in * d + w * d * f_out)
                continue
            computed += 2.0 * (c * f_in * d + w * d * f_out)  # input projection on the context, output on content
            computed += (n - 1) * (c * per_block + 4.0 * c * c * d)  # full blocks
            computed += c * (per_block - q_rows_block) + w * q_rows_block + 4.0 * w * c * d  # last block
    return content, computed


def ceiling_pass(config: GeoSANEConfig, windows_per_pass: int):
    return gemm_step(gemm_plan(config, windows_per_pass), training=False)


def timed(fn) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def bench(model: GeoSANEModel, prompt: str, args: argparse.Namespace) -> dict[str, float]:
    config = model.config
    step = ceiling_pass(config, args.window_batch)
    step()  # warm-up
    wall: dict[str, list[float]] = {s: [] for s in [*STEPS, "total"]}
    cpu: dict[str, list[float]] = {s: [] for s in [*STEPS, "total"]}
    ceiling_wall, ceiling_cpu = [], []
    loads = []
    peak = peak_no_calibration = bound = 0.0
    tokens = 0
    result: list = []
    cold_wall = cold_cpu = 0.0
    for repeat in range(args.repeats + 1):
        # Repeats 0..R-1 time the steady state (freed heap is reused, as it is for the ceiling's passes); the last
        # run starts after malloc_trim, so its RSS increase counts every allocation and its time is the cold one.
        cold = repeat == args.repeats
        for _ in range(args.ceiling_passes):  # interleaved: the ceiling sees the same background load
            w, c = timed(step)
            ceiling_wall.append(w)
            ceiling_cpu.append(c)
        if cold:
            trim_heap()

        def run(result: list = result) -> None:
            result.append(
                generate_weights(
                    model,
                    prompt,
                    in_chans=4,
                    num_classes=6,
                    seed=0,
                    window_batch_size=args.window_batch,
                    calibration_count=args.calibration_images,
                )
            )

        with RssTrace() as rss:
            w, c = timed(run)
        out = result.pop()
        timer = CpuTimer.last
        label = "cold (after malloc_trim)" if cold else f"repeat {repeat}"
        print(f"  {prompt} {label}: {w:.1f} s wall, {c:.1f} s CPU, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        tokens = out.provenance["tokenizer"]["num_tokens"]
        if cold:
            cold_wall, cold_cpu = w, c
            sd = out.state_dicts[0]
            prompt_bytes = sum(v.numel() * v.element_size() for v in sd.values())
            model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            peak = (rss.peak - rss.start) / 2**30
            peak_no_calibration = (rss.peak_before(timer.spans, "calibrate") - rss.start) / 2**30
            bound = (2 * prompt_bytes + model_bytes) / 2**30
            del out, sd
            continue
        del out
        for s in STEPS:
            wall[s].append(timer.seconds.get(s, 0.0))
            cpu[s].append(timer.cpu.get(s, 0.0))
        wall["total"].append(w)
        cpu["total"].append(c)
        loads.append(os.getloadavg()[0])
    windows = math.ceil(tokens / config.window_size)
    scale = windows / args.window_batch
    content_flops, computed_flops = flops_with_halo(config, tokens)
    row: dict[str, float] = {"tokens": tokens, "peak_gb": peak, "bound_gb": bound, "load": statistics.median(loads)}
    row["peak_no_calibration_gb"] = peak_no_calibration
    for s in [*STEPS, "total"]:
        row[s] = statistics.median(wall[s])
        row[f"{s}_cpu"] = statistics.median(cpu[s])
    row["ceiling"] = statistics.median(ceiling_wall) * scale
    row["ceiling_cpu"] = statistics.median(ceiling_cpu) * scale
    row["max"] = content_flops / computed_flops
    row["cold"], row["cold_cpu"] = cold_wall, cold_cpu
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", nargs="+", default=None, help="timm architectures")
    parser.add_argument("--preset", default="small", help="GeoSANE config preset")
    parser.add_argument("--window-batch", type=int, default=32, help="windows per encode/decode pass")
    parser.add_argument("--calibration-images", type=int, default=16, help="BatchNorm calibration patches")
    parser.add_argument("--repeats", type=int, default=3, help="generations per prompt (median)")
    parser.add_argument("--ceiling-passes", type=int, default=3, help="ceiling passes before each generation")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="mobilenetv2_100 + resnet18, 2 repeats")
    parser.add_argument(
        "--calibrate-contiguous",
        action="store_true",
        help="BatchNorm calibration in the contiguous format (generate_weights uses channels_last)",
    )
    add_allocator_flag(parser)
    args = parser.parse_args(argv)
    apply_allocator_flag(args)
    prompts = args.prompts or (["mobilenetv2_100", "resnet18"] if args.quick else PROMPTS)
    if args.quick:
        args.repeats = min(args.repeats, 2)
    torch.set_num_threads(args.threads)
    pipeline_geosane.StepTimer = CpuTimer  # per-step CPU time next to wall time (benchmark only)
    pipeline_geosane.CALIBRATE_CHANNELS_LAST = not args.calibrate_contiguous
    torch.manual_seed(0)
    model = GeoSANEModel(GeoSANEConfig.from_preset(args.preset)).eval()
    print(
        f"GeoSANE {args.preset} (random init), {torch.get_num_threads()} thread(s), {args.window_batch} windows per "
        f"pass, median of {args.repeats}, calibration {'contiguous' if args.calibrate_contiguous else 'channels_last'}"
        f"; load before {os.getloadavg()[0]:.1f}"
    )
    rows = [(prompt, bench(model, prompt, args)) for prompt in prompts]
    for clock, suffix in (("wall", ""), ("CPU", "_cpu")):
        print(f"\nseconds by {clock} time")
        header = ["prompt", "tokens", *STEPS, "total", "cold total", "enc+dec", "ceiling", "ceil/(e+d)", "max"]
        header += ["other %"]
        header += ["peak GB", "peak before calibrate", "bound GB", "load"]
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for prompt, r in rows:
            encdec = r[f"encode{suffix}"] + r[f"decode{suffix}"]
            other = sum(r[f"{s}{suffix}"] for s in OTHER)
            cells = [prompt, f"{r['tokens']:,}"] + [f"{r[f'{s}{suffix}']:.2f}" for s in STEPS]
            cells += [f"{r[f'total{suffix}']:.1f}", f"{r[f'cold{suffix}']:.1f}", f"{encdec:.1f}"]
            cells += [f"{r[f'ceiling{suffix}']:.1f}"]
            cells += [f"{r[f'ceiling{suffix}'] / encdec:.2f}", f"{r['max']:.2f}"]
            cells += [f"{100 * other / r[f'total{suffix}']:.1f}", f"{r['peak_gb']:.2f}"]
            cells += [f"{r['peak_no_calibration_gb']:.2f}", f"{r['bound_gb']:.2f}"]
            cells += [f"{r['load']:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nload after: {os.getloadavg()[0]:.1f} (shared machine: compare same-run ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
