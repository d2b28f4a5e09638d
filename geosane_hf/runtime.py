"""Process-level settings that make CPU runs fast: glibc's malloc thresholds (and handing freed heap back).

glibc serves every allocation above its mmap threshold (128 KiB at start, raised dynamically only after a freed
mmapped block) with a fresh ``mmap``, and returns it to the kernel on ``free``. A transformer step allocates its
activations anew every time (a ``[8, 128, 768]`` float32 MLP activation is 3 MiB), so each one is page-faulted in
on first touch, ~0.25 us per 4 KiB page: on the ``small`` preset that is 10-15% of a step on 2 cores. Raising the
mmap threshold to 32 MiB and the trim threshold to 128 MiB keeps those blocks in the heap and reuses their pages.
Memory that is freed stays with the process up to the trim threshold (128 MiB), not longer.

Measured on this machine class (``benchmarks/model_speed.py``, 2 threads, same-run GEMM ceiling): ``small`` went
from 68-78% to 82-83% of the ceiling for inference and from 78-81% to 85-88% for training; see
``docs/benchmarks.md``. PyTorch's CPU performance guide makes the same point with jemalloc/tcmalloc; this needs
no extra library.

The command line (``geosane ...``) and ``training/train.py`` call :func:`tune_cpu_allocator` at start; library
users call it once themselves. It also exports ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` so that
worker processes started afterwards (Accelerate ranks, evaluation workers) get the same settings.

Example:
    >>> from geosane_hf.runtime import tune_cpu_allocator
    >>> isinstance(tune_cpu_allocator(), bool)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform

MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum for the mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 128 * 2**20
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_ENV = {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None  # musl, macOS, Windows: other allocators, nothing to set
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_cpu_allocator(export_env: bool = True) -> bool:
    """Raises glibc's mmap and trim thresholds for this process (and, optionally, for its future children).

    Settings the user made already win: when ``MALLOC_MMAP_THRESHOLD_`` is set in the environment, glibc read it at
    start and this function leaves the process alone. Safe to call more than once; a no-op off glibc.

    Args:
        export_env: Also set the two ``MALLOC_*_THRESHOLD_`` variables (if unset) so that processes started later
            (``accelerate launch`` ranks, multiprocessing ``spawn`` workers) start with the same thresholds.

    Returns:
        True if glibc accepted the settings (or the user's own environment settings are in force), False where
        there is no glibc to tune.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return True
    libc = _libc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if applied and export_env:
        for name, value in _ENV.items():
            os.environ.setdefault(name, str(value))
    return applied


def release_freed_memory() -> None:
    """Hands freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    With the raised thresholds, freed blocks up to 32 MiB stay in the heap; a caller about to allocate large new
    buffers (``generate_weights`` before its tokens and decoded tokens) trims first, so that the peak RSS does not
    count both.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def describe_allocator(tuned: bool) -> str:
    """One line for benchmark headers: which malloc thresholds the process runs with."""
    value = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    if value is not None and value != str(MMAP_THRESHOLD):
        return f"MALLOC_MMAP_THRESHOLD_={value} from the environment"
    if tuned:
        return f"glibc malloc, mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB (tuned)"
    return "default allocator (no glibc to tune)"
