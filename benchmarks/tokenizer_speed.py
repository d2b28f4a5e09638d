"""Tokenizer speed and memory, next to a plain ``clone()`` of the same tensors measured in the same run.

Throughput (one process, ops interleaved round-robin so that load from other processes hits all alike; median
of ``--repeats``): GB/s = bytes of the source tensors the op handles / seconds. The baseline is
``{k: v.clone() for k, v in tensors}`` over exactly those tensors ("full": the whole state_dict; "geosane": the
weights and biases it tokenizes), and ``ratio`` = op GB/s / clone GB/s. A second baseline, ``cat``, copies the same
tensors into one fresh buffer (``torch.cat``), which like the tokens must be page-faulted in: on VMs where a first
touch costs ~1 GB/s while per-tensor clones recycle freed heap memory, ``cat`` is the fair bound for a fresh output.
``clone+check bound`` is the best ratio any tokenizer that checks for NaN/Inf can reach: clone time / (clone time +
one ``isfinite(tokens.sum())`` over its output, timed in the same loop). ``reuse-out`` rows tokenize into the buffers of a previous result (``tokenize(sd, out=previous)``). ``naive`` is a
per-layer reshape/cat/pad tokenizer in the style of the original, written from the spec, as a third reference.

Peak memory (``--memory``, one fresh subprocess per measurement): the process's peak RSS above its RSS just before
the op, from ``/proc/self/status`` (``VmHWM`` reset through ``/proc/self/clear_refs``). torch's CPU allocator has no
peak counter and tracemalloc does not see it, so RSS is the honest measure; it includes page-cache pages of a
memory-mapped file that the op touches, so for the lazy safetensors row we also sample ``RssAnon`` (anonymous
memory only) every millisecond from a thread. Compare with the output size (tokens + mask + positions + types).

Example:
    $ .venv/bin/python benchmarks/tokenizer_speed.py --quick
    $ .venv/bin/python benchmarks/tokenizer_speed.py --repeats 9 --memory --json benchmarks/results/tokenizer_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

DEFAULT_MODELS = ["resnet50", "vit_base_patch16_224", "swin_base_patch4_window7_224", "mobilenetv2_100"]
MEMORY_OPS = ["clone", "tokenize:full", "tokenize:geosane", "detokenize:full", "tokenize:full:lazy-safetensors"]


def random_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm model's state_dict with random values (built on the meta device; no slow init)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    state_dict = model.to_empty(device="cpu").state_dict()
    generator = torch.Generator().manual_seed(seed)
    for tensor in state_dict.values():
        if tensor.is_floating_point():
            tensor.normal_(generator=generator)
        else:
            tensor.random_(0, 100, generator=generator)
    return dict(state_dict)


def naive_tokenize(state_dict: dict[str, torch.Tensor], token_size: int) -> tuple[torch.Tensor, ...]:
    """The original's approach, from the spec: per layer reshape, cat the bias, pad, collect, cat at the end."""
    tokens, masks, positions, layer = [], [], [], 0
    for key, w in state_dict.items():
        if "weight" not in key:
            continue
        w = w.reshape(w.shape[0], -1)
        bias_key = key.replace("weight", "bias")
        if bias_key in state_dict:
            w = torch.cat([w, state_dict[bias_key].unsqueeze(1)], dim=1)
        w = w.reshape(-1)
        count = math.ceil(w.numel() / token_size)
        padded = torch.zeros(count * token_size)
        padded[: w.numel()] = w
        mask = torch.zeros(count * token_size)
        mask[: w.numel()] = 1
        tokens.append(padded.view(count, token_size))
        masks.append(mask.view(count, token_size).bool())
        positions.extend([layer, j] for j in range(count))
        layer += 1
    pos = torch.tensor([(n, layer, j) for n, (layer, j) in enumerate(positions)])
    return torch.cat(tokens), torch.cat(masks), pos.to(torch.int16 if pos.max() <= 32767 else torch.int32)


def median_seconds(ops: dict[str, callable], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeats):
        for name, op in ops.items():
            start = time.perf_counter()
            out = op()
            times[name].append(time.perf_counter() - start)
            del out
    return {name: statistics.median(ts) for name, ts in times.items()}


def measure_throughput(name: str, repeats: int, naive: bool) -> list[dict]:
    from geosane_hf.tokenizer import WeightTokenizer

    state_dict = random_state_dict(name)
    full, geosane = WeightTokenizer(mode="full"), WeightTokenizer(mode="geosane")
    tok_full, tok_geo = full.tokenize(state_dict), geosane.tokenize(state_dict)
    geo_keys = [k for e in tok_geo.layout.entries for k in (e.key, e.bias_key) if k]
    geo_tensors = {k: state_dict[k] for k in geo_keys}

    def nbytes(tensors):
        return sum(t.numel() * t.element_size() for t in tensors.values())

    full_tensors = list(state_dict.values())
    geo_list = list(geo_tensors.values())
    reuse_full, reuse_geo = full.tokenize(state_dict), geosane.tokenize(state_dict)
    ops = {
        "clone:full": lambda: {k: v.clone() for k, v in state_dict.items()},
        "cat:full": lambda: torch.cat([t.reshape(-1).float() for t in full_tensors]),
        "tokenize:full": lambda: full.tokenize(state_dict),
        "tokenize:full:reuse-out": lambda: full.tokenize(state_dict, out=reuse_full),
        "detokenize:full": lambda: full.detokenize(tok_full),
        "detokenize:full:views": lambda: full.detokenize(tok_full, copy=False),
        "clone:geosane": lambda: {k: v.clone() for k, v in geo_tensors.items()},
        "cat:geosane": lambda: torch.cat([t.reshape(-1) for t in geo_list]),
        "tokenize:geosane": lambda: geosane.tokenize(state_dict),
        "tokenize:geosane:reuse-out": lambda: geosane.tokenize(state_dict, out=reuse_geo),
        "detokenize:geosane": lambda: geosane.detokenize(tok_geo),
        # the NaN/Inf check every tokenize must make (one read-only sum over the tokens), for the "+ check" bound
        "check:full": lambda: torch.isfinite(tok_full.tokens.sum()),
        "check:geosane": lambda: torch.isfinite(tok_geo.tokens.sum()),
    }
    seconds = median_seconds(ops, repeats)
    if naive:  # ~50x slower than the rest: two repeats are enough
        naive_op = {"naive-tokenize:geosane": lambda: naive_tokenize(state_dict, 230)}
        seconds.update(median_seconds(naive_op, 2))
    rows = []
    for op, secs in seconds.items():
        if op.startswith(("clone", "cat", "check")):
            continue
        mode = "full" if ":full" in op else "geosane"
        size = nbytes(state_dict) if mode == "full" else nbytes(geo_tensors)
        base, cat, check = seconds[f"clone:{mode}"], seconds[f"cat:{mode}"], seconds[f"check:{mode}"]
        rows.append(
            {
                "model": name,
                "op": op,
                "MB": size / 1e6,
                "tokens": (tok_full if mode == "full" else tok_geo).num_tokens,
                "seconds": secs,
                "GB/s": size / secs / 1e9,
                "clone GB/s": size / base / 1e9,
                "ratio": base / secs,
                "cat GB/s": size / cat / 1e9,
                "ratio to cat": cat / secs,
                "clone+check bound": base / (base + check) if op.startswith("tokenize") else float("nan"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ memory probe


def _status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _probe(name: str, op: str) -> dict:
    """Runs one op in this (fresh) process and returns its peak memory above the RSS just before it."""
    import gc

    from geosane_hf.tokenizer import WeightTokenizer

    state_dict = random_state_dict(name)
    mode = "geosane" if "geosane" in op else "full"
    tokenizer = WeightTokenizer(mode=mode)
    source = state_dict
    tmp = None
    if op.startswith("detokenize"):
        prepared = tokenizer.tokenize(state_dict)
    if op.endswith("lazy-safetensors"):
        from geosane_hf.checkpoints import load_checkpoint, save_safetensors

        tmp = tempfile.TemporaryDirectory()
        path = os.path.join(tmp.name, "model.safetensors")
        save_safetensors(state_dict, path)
        del state_dict
        source = load_checkpoint(path).state_dict
    gc.collect()
    largest = max(math.prod(s.shape) * 4 for s in getattr(source, "tensor_specs", {}).values()) if tmp else 0

    samples = {"anon": 0}
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            samples["anon"] = max(samples["anon"], _status().get("RssAnon", 0))
            time.sleep(0.001)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status()
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    if op == "clone":
        out = {k: v.clone() for k, v in source.items()}
        out_bytes = sum(v.numel() * v.element_size() for v in out.values())
    elif op.startswith("tokenize"):
        out = tokenizer.tokenize(source)
        out_bytes = sum(t.numel() * t.element_size() for t in (out.tokens, out.mask, out.positions, out.layer_types))
    else:
        out = tokenizer.detokenize(prepared)
        out_bytes = sum(v.numel() * v.element_size() for v in out.values())
    stop.set()
    thread.join()
    after = _status()
    result = {
        "model": name,
        "op": op,
        "output MB": out_bytes / 1e6,
        "peak RSS delta MB": (after["VmHWM"] - before["VmRSS"]) / 1e6,
        "peak anon delta MB": max(samples["anon"] - before.get("RssAnon", 0), 0) / 1e6,
        "largest tensor MB": largest / 1e6,
    }
    if tmp:
        tmp.cleanup()
    return result


def measure_memory(name: str) -> list[dict]:
    rows = []
    for op in MEMORY_OPS:
        proc = subprocess.run(
            [sys.executable, __file__, "--_probe", name, op], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            rows.append({"model": name, "op": op, "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ----------------------------------------------------------------------------------------------------- output


def print_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(value):
        return (
            f"{value:.3f}"
            if isinstance(value, float) and value < 10
            else (f"{value:.1f}" if isinstance(value, float) else str(value))
        )

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help="timm architectures")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per op (median)")
    parser.add_argument("--quick", action="store_true", help="mobilenetv2_100 and resnet50, 3 repeats")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (a subprocess per op)")
    parser.add_argument("--no-throughput", action="store_true", help="only the memory measurements")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive per-layer tokenizer")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="write all rows to this JSON file")
    parser.add_argument("--_probe", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._probe:
        print(json.dumps(_probe(*args._probe)))
        return 0
    if args.quick:
        args.models, args.repeats = ["mobilenetv2_100", "resnet50"], 3

    from tqdm import tqdm

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} repeats, load {load}"
    )
    rows, speed = [], ""
    for name in tqdm([] if args.no_throughput else args.models, desc="throughput", unit="model"):
        rows += measure_throughput(name, args.repeats, naive=not args.no_naive)
    if rows:
        columns = ["model", "op", "MB", "tokens", "GB/s", "clone GB/s", "ratio", "cat GB/s", "ratio to cat"]
        columns.append("clone+check bound")
        speed = print_table(rows, columns)
    memory_rows = []
    if args.memory:
        print()
        for name in tqdm(args.models, desc="memory", unit="model"):
            memory_rows += measure_memory(name)
        print_table(
            memory_rows,
            ["model", "op", "output MB", "peak RSS delta MB", "peak anon delta MB", "largest tensor MB", "error"],
        )
    main_ops = ("tokenize:full", "tokenize:geosane", "detokenize:full", "detokenize:geosane")
    ratios = [r["ratio"] for r in rows if r["op"] in main_ops]
    if ratios:
        print(f"\nratio to clone (tokenize/detokenize): min {min(ratios):.2f}, median {statistics.median(ratios):.2f}")
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"throughput": rows, "memory": memory_rows, "table": speed}, indent=1))
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
