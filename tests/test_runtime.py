"""geosane_hf.runtime: glibc malloc thresholds for fast CPU steps."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

# Allocates a 4 MiB buffer and reports how many bytes glibc holds in mmapped blocks while it lives (mallinfo2).
PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    tuned = None
    if sys.argv[1] == "tune":
        from geosane_hf.runtime import tune_cpu_allocator
        tuned = tune_cpu_allocator()
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(4 * 2**20)
    mmapped = libc.mallinfo2().hblkhd - before
    libc.free(ctypes.c_void_p(block))
    print(json.dumps({"tuned": tuned, "mmapped": mmapped, "env": os.environ.get("MALLOC_MMAP_THRESHOLD_")}))
    """
)


def run_probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environ.update(env)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env=environ, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_default_glibc_serves_a_4mib_block_with_mmap():
    assert run_probe("plain")["mmapped"] >= 4 * 2**20


def test_tuned_allocator_keeps_a_4mib_block_in_the_heap_and_exports_the_setting():
    result = run_probe("tune")
    assert result["tuned"] is True
    assert result["mmapped"] == 0
    assert result["env"] == str(32 * 2**20)  # children started later get the same thresholds


def test_children_inherit_the_exported_thresholds():
    assert run_probe("plain", MALLOC_MMAP_THRESHOLD_=str(32 * 2**20))["mmapped"] == 0


def test_a_users_own_setting_wins():
    result = run_probe("tune", MALLOC_MMAP_THRESHOLD_=str(2**20))
    assert result["tuned"] is True
    assert result["env"] == str(2**20)
    assert result["mmapped"] >= 4 * 2**20  # the user's 1 MiB threshold, not ours
