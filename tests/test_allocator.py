"""hybridnb.allocator: large blocks stay on glibc's heap once tuned, and its free top stays mapped until
release_memory; HYBRIDNB_MALLOC=default opts out.

Each case runs in a fresh interpreter: the setting is process-wide and applied once.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="glibc only")

# Allocates a 100 MB block (above glibc's 32 MiB maximum dynamic mmap threshold) and reports where
# it came from: mallinfo2().hblkhd is the number of bytes in mmap-ed chunks.
PROBE = r"""
import ctypes, json, sys
from hybridnb import allocator
tuned = allocator.tune_malloc() if sys.argv[1] == "tune" else False
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
block = libc.malloc(100 * 2**20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
kept = libc.mallinfo2().arena  # the heap's size once the block is free: trimmed back, or kept for the next step
allocator.release_memory()
print(json.dumps({"tuned": tuned, "again": allocator.tune_malloc() if tuned else None,
                  "recorded": allocator.malloc_tuned(), "mmapped_bytes": mapped, "heap_after_free": kept,
                  "heap_after_release": libc.mallinfo2().arena}))
"""


def _probe(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_tuned_malloc_keeps_large_blocks_on_the_heap():
    res = _probe("tune", HYBRIDNB_MALLOC="")
    assert res["tuned"] is True and res["again"] is True and res["recorded"] is True
    assert res["mmapped_bytes"] == 0
    assert res["heap_after_free"] >= 100 * 2**20  # not trimmed at free: the next step reuses the pages
    assert res["heap_after_release"] < 50 * 2**20  # release_memory trims it


@glibc
def test_default_malloc_maps_large_blocks():
    res = _probe("none", HYBRIDNB_MALLOC="")
    assert res["tuned"] is False and res["recorded"] is False
    assert res["mmapped_bytes"] >= 100 * 2**20  # the probe can fail: glibc's default mmap-s such a block


@glibc
def test_opt_out_leaves_glibc_alone():
    res = _probe("tune", HYBRIDNB_MALLOC="default")
    assert res["tuned"] is False and res["recorded"] is False
    assert res["mmapped_bytes"] >= 100 * 2**20
