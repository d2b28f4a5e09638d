"""Helpers for the fault-injection tests: a tiny tokenized-weights dataset and a child process stopped mid-write.

A child runs a short Python program that patches one write step to print a marker and then block on its stdin;
the test reads the child's stdout until the marker (no sleeps, no timing), does what it wants while the child is
provably in the middle of the write, and SIGKILLs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from geosane_hf.checkpoints import save_safetensors
from geosane_hf.collection.architectures import build_architecture
from geosane_hf.collection.collector import collect
from geosane_hf.collection.dataset import DatasetBuildConfig, build_dataset
from geosane_hf.collection.manifest import CollectionManifest

REPO = Path(__file__).resolve().parent.parent
ARCH = {"library": "geosane", "name": "statlog_cnn", "kwargs": {"in_chans": 4, "num_classes": 6, "width": 8}}
SMALL_BUILD = DatasetBuildConfig(chunk_tokens=16)
MARKER = "GEOSANE-TEST-STOPPED-MID-WRITE"


def build_tiny_collection(root: Path, count: int = 6) -> Path:
    """``count`` statlog CNNs sharing a base (like a population), collected into ``root / "collection"``."""
    root.mkdir(parents=True, exist_ok=True)
    base = build_architecture("statlog_cnn", in_chans=4, num_classes=6, width=8)
    torch.manual_seed(0)
    for p in base.parameters():
        torch.nn.init.normal_(p, 0.0, 0.5)
    entries = []
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        state = {
            k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
            for k, v in base.state_dict().items()
        }
        save_safetensors(state, root / f"cnn{i}.safetensors")
        entries.append(
            {"id": f"cnn-{i}", "source": {"kind": "local", "path": f"cnn{i}.safetensors"}, "architecture": ARCH}
        )
    manifest = CollectionManifest.from_dict({"name": "tiny", "models": entries}, root=root)
    collect(manifest, root / "collection", progress=False)
    return root / "collection"


def build_tiny_dataset(root: Path) -> Path:
    """The tiny collection tokenized into ``root / "dataset"`` (token size 230, 16 tokens per chunk)."""
    collection = build_tiny_collection(root)
    build_dataset(collection, root / "dataset", SMALL_BUILD, progress=False)
    return root / "dataset"


def start_stopped_child(program: str, *argv: str, log: Path) -> subprocess.Popen:
    """Starts ``python -c program argv...`` and returns once it printed :data:`MARKER` (it then blocks on stdin).

    ``program`` must print the marker (flushed) at the point to interrupt, then block with ``sys.stdin.read()``.
    stderr goes to ``log`` (a pipe could fill up and block the child before it reaches the marker).
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env |= {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", program, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=REPO,
            text=True,
        )
    for line in child.stdout:
        if line.strip() == MARKER:
            return child
    child.wait()
    raise AssertionError(f"the child exited ({child.returncode}) before the marker:\n{log.read_text()[-3000:]}")


def sigkill(child: subprocess.Popen) -> None:
    """Kills the child the hard way (no cleanup handlers run) and reaps it."""
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    child.stdin.close()
    child.stdout.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
