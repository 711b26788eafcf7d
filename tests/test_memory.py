"""Measuring the memory a call takes, whatever allocates it; the steady heap."""

import os
import subprocess
import sys

import numpy as np
import pytest

from fusemycell import memory

MIB = 2**20


def _allocate(mib: int) -> None:
    block = np.ones(mib * MIB, dtype=np.uint8)  # written: resident, not only reserved
    assert block.sum() == mib * MIB


@pytest.mark.skipif(memory._status_bytes("VmRSS") is None, reason="reads /proc/self/status")
def test_a_short_lived_block_is_seen_by_the_high_water_mark():
    peak = memory.call_peak_bytes(lambda: _allocate(64))
    assert 60 * MIB <= peak <= 80 * MIB  # freed before the call returns, still measured
    assert memory.call_peak_bytes(lambda: None) < 8 * MIB


def test_without_a_high_water_mark_the_resident_set_is_sampled(monkeypatch):
    import time

    monkeypatch.setattr(memory, "_reset_high_water_mark", lambda: False)

    def hold():
        block = np.ones(64 * MIB, dtype=np.uint8)
        time.sleep(0.2)  # 200 samples' time: the sampler sees the block
        return block.sum()

    assert 48 * MIB <= memory.call_peak_bytes(hold) <= 96 * MIB


#: A fresh interpreter: allocate 400 buffers of 96 KiB (below glibc's initial 128 KiB mmap threshold), free
#: every other one, and print how much of the freed half the resident set still holds, MiB.
_HOLES = """
import ctypes, ctypes.util, sys
from fusemycell import memory
steady = sys.argv[1] == "steady" and memory.steady_heap()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size, count = 96 * 1024, 400
before = memory._status_bytes("VmRSS")
blocks = [libc.malloc(size) for _ in range(count)]
for block in blocks:
    ctypes.memset(block, 1, size)
full = memory._status_bytes("VmRSS")
for block in blocks[::2]:
    libc.free(block)
after = memory._status_bytes("VmRSS")
print(steady, (after - before) / 2**20, (full - before) / 2**20)
"""


def _freed_memory_kept(heap: str) -> tuple[str, float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    result = subprocess.run(
        [sys.executable, "-c", _HOLES, heap], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    steady, kept, full = result.stdout.split()
    return steady, float(kept), float(full)


@pytest.mark.skipif(memory._status_bytes("VmRSS") is None, reason="reads /proc/self/status")
def test_the_steady_heap_gives_freed_buffers_back_where_glibc_keeps_them():
    steady, kept, full = _freed_memory_kept("steady")
    if steady != "True":
        pytest.skip("not glibc: its own heap policy stands")
    assert full >= 30  # 400 x 96 KiB = 37.5 MiB were written
    assert kept <= 0.6 * full  # the freed half went back
    _, kept_by_glibc, full_by_glibc = _freed_memory_kept("glibc")
    assert kept_by_glibc >= 0.9 * full_by_glibc  # glibc's own heap keeps the holes between live buffers


def test_a_malloc_threshold_set_by_the_user_is_kept(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    memory.steady_heap.cache_clear()
    try:
        assert memory.steady_heap() is False  # the user's choice: nothing set
    finally:
        memory.steady_heap.cache_clear()
