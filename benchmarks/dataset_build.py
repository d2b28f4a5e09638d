"""Benchmark: `geosane build-dataset` throughput and peak memory on large random-init checkpoints.

Generates N random-init timm checkpoints in safetensors (default ten ``vit_large_patch16_224``, ~1.2 GB each; built
on the meta device, ``to_empty`` + ``randn`` fill, saved with ``save_safetensors``) as a collection folder, then
measures, each in a fresh subprocess (peak memory = the process's RSS high-water mark, ``VmHWM`` of
``/proc/self/status``):

- baseline: read every tensor of every checkpoint (same lazy reader) and write its bytes to disk, no tokenizing;
- build: ``build_dataset`` (tokenize in chunks + Parquet shards), the thing under test;
- idle: the interpreter with the same imports and nothing else (what any Python + torch process costs).

It prints one table (MB/s of weights, peak RSS, ratio to the baseline) and deletes the generated GBs unless
``--keep``. Goal (issue 4): peak memory under 2 GB and throughput within 3x of the baseline.

Examples:
    python benchmarks/dataset_build.py --quick            # 2 x vit_base_patch16_224 (~0.7 GB)
    python benchmarks/dataset_build.py                    # 10 x vit_large_patch16_224 (~12 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def vm_hwm_mb() -> float:
    """The RSS high-water mark of this process, in MiB (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def generate(collection: Path, arch: str, n: int) -> int:
    """Writes n random-init checkpoints + collection.jsonl; returns the bytes of weights."""
    import timm
    import torch

    from geosane_hf.checkpoints import save_safetensors
    from geosane_hf.collection.collector import CollectedModel, write_collection_index

    (collection / "models").mkdir(parents=True, exist_ok=True)
    records, total = [], 0
    for i in range(n):
        start = time.perf_counter()
        with torch.device("meta"):
            model = timm.create_model(arch, pretrained=False)
        model = model.to_empty(device="cpu")
        generator = torch.Generator().manual_seed(i)
        state_dict = model.state_dict()
        with torch.no_grad():
            for tensor in state_dict.values():
                if tensor.is_floating_point():
                    tensor.normal_(0.0, 0.02, generator=generator)
                else:
                    tensor.zero_()
        file = f"models/{arch}-{i:02d}.safetensors"
        save_safetensors(state_dict, collection / file)
        num = sum(t.numel() for t in state_dict.values() if t.is_floating_point())
        total += sum(t.numel() * t.element_size() for t in state_dict.values())
        records.append(
            CollectedModel(
                id=f"{arch}-{i:02d}",
                file=file,
                file_bytes=(collection / file).stat().st_size,
                content_sha256=f"benchmark-random-init-seed-{i}",
                spec_sha256="benchmark",
                num_parameters=num,
                num_tensors=len(state_dict),
                num_layers=sum("weight" in k for k in state_dict),
                dtypes={"float32": len(state_dict)},
                source=f"timm:{arch} (random init, seed {i})",
                source_revision=None,
                source_sha256=None,
                architecture={"library": "timm", "name": arch, "kwargs": {}},
                strict_load=True,
                entry={"role": "rs-model", "task": "benchmark", "license": "Apache-2.0"},
            )
        )
        del model, state_dict
        print(f"  generated {file} in {time.perf_counter() - start:.1f} s", flush=True)
    write_collection_index(collection, records)
    return total


def measure_baseline(collection: Path, out: Path) -> dict:
    """Reads every tensor and writes its raw bytes, one output file per checkpoint."""
    import numpy as np  # noqa: F401  (same imports as the build, so the idle RSS compares)
    import pyarrow.parquet  # noqa: F401

    from geosane_hf.checkpoints import open_safetensors
    from geosane_hf.collection.collector import read_collection_index

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    written = 0
    for record in read_collection_index(collection):
        with (
            open_safetensors(collection / record.file, mmap=False) as state_dict,
            open(out / f"{record.id}.bin", "wb") as handle,
        ):
            for key in state_dict:
                tensor = state_dict[key]
                written += handle.write(memoryview(tensor.reshape(-1).numpy()).cast("B"))
                del tensor
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "bytes_written": written}


def measure_build(collection: Path, out: Path, args: argparse.Namespace) -> dict:
    from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset

    config = DatasetBuildConfig(
        mode=args.mode, chunk_tokens=args.chunk_tokens, max_shard_mb=args.max_shard_mb, compression=args.compression
    )
    start = time.perf_counter()
    result = build_dataset(collection, out, config, progress=False)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "bytes_written": result.parquet_bytes,
        "tokens": result.num_tokens,
        "shards": len(result.token_shards),
    }


def measure_idle() -> dict:
    import numpy  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401

    import geosane_hf.collection.dataset  # noqa: F401

    return {"seconds": 0.0, "bytes_written": 0}


def child(args: argparse.Namespace) -> None:
    collection, out = Path(args.collection), Path(args.out)
    if args.measure == "baseline":
        result = measure_baseline(collection, out)
    elif args.measure == "build":
        result = measure_build(collection, out, args)
    else:
        result = measure_idle()
    result["vm_hwm_mb"] = vm_hwm_mb()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(measure: str, collection: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--measure",
        measure,
        "--collection",
        str(collection),
        "--out",
        str(out),
        "--mode",
        args.mode,
        "--chunk-tokens",
        str(args.chunk_tokens),
        "--max-shard-mb",
        str(args.max_shard_mb),
        "--compression",
        args.compression,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{measure} failed:\n{proc.stdout}\n{proc.stderr}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="number of checkpoints (default 10; 2 with --quick)")
    parser.add_argument("--arch", default=None, help="timm architecture (default vit_large_patch16_224)")
    parser.add_argument("--quick", action="store_true", help="2 x vit_base_patch16_224")
    parser.add_argument("--mode", choices=("full", "geosane"), default="full")
    parser.add_argument("--chunk-tokens", type=int, default=512)
    parser.add_argument("--max-shard-mb", type=float, default=128.0)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--work-dir", default=None, help="where to put the GBs (default: a temp folder in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints and outputs")
    parser.add_argument("--measure", choices=("baseline", "build", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--collection", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        child(args)
        return
    n = args.n if args.n is not None else (2 if args.quick else 10)
    arch = args.arch or ("vit_base_patch16_224" if args.quick else "vit_large_patch16_224")
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="geosane-dataset-bench-", dir=args.work_dir))
    try:
        print(f"generating {n} x {arch} in {work}", flush=True)
        start = time.perf_counter()
        weight_bytes = generate(work / "collection", arch, n)
        print(f"  {weight_bytes / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s", flush=True)
        idle = run_child("idle", work / "collection", work / "idle", args)
        baseline = run_child("baseline", work / "collection", work / "baseline", args)
        shutil.rmtree(work / "baseline", ignore_errors=True)
        build = run_child("build", work / "collection", work / "dataset", args)
        rows = [
            ("idle (imports only)", idle),
            ("baseline: read + write raw bytes", baseline),
            ("build-dataset", build),
        ]
        print()
        print(
            f"{n} x {arch}, {weight_bytes / 1e9:.2f} GB of float32 weights, mode {args.mode}, chunk "
            f"{args.chunk_tokens} tokens, {args.compression}, shards <= {args.max_shard_mb:g} MiB"
        )
        print("| step | seconds | MB/s of weights | written GB | peak RSS (VmHWM) MiB | time vs baseline |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, row in rows:
            rate = weight_bytes / 1e6 / row["seconds"] if row["seconds"] else float("nan")
            ratio = row["seconds"] / baseline["seconds"] if row["seconds"] else float("nan")
            print(
                f"| {name} | {row['seconds']:.1f} | {rate:.0f} | {row['bytes_written'] / 1e9:.2f} | "
                f"{row['vm_hwm_mb']:.0f} | {ratio:.2f}x |"
            )
        if "tokens" in build:
            print(f"build: {build['tokens']:,} tokens in {build['shards']} shards")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
