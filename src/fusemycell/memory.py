"""Peak memory of this process (and its worker processes) and of the accelerator: one sampler for all.

The training engine samples it between batches (its per-epoch ``peak_rss_mb``); the
memory-monitor hooks sample it from a thread while a node runs and while its outputs
are saved (``memory.<pipeline>.<node>.peak_rss_mb``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


class MemoryPeak:
    """Peak resident memory (bytes) since :meth:`reset`, and the accelerator's peak (MB)."""

    def __init__(self, device: Any = None, *, children: bool = False):
        import psutil

        self.process = psutil.Process()
        self.device = device
        self.children = children
        self.samples = 0
        self.reset()

    def _torch_device(self) -> tuple[Any, str]:
        import torch

        if self.device is not None:
            device = torch.device(self.device)
            return device, device.type
        if torch.cuda.is_available():
            return None, "cuda"
        if hasattr(torch, "mps") and torch.backends.mps.is_available():
            return None, "mps"
        return None, "cpu"

    def reset(self) -> None:
        """Start a new measurement."""
        import torch

        self.rss = 0
        self.peak_device_mb = 0.0
        device, kind = self._torch_device()
        if kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.sample()

    def current_rss(self) -> int:
        """Resident memory now, bytes (with the worker processes' when ``children``)."""
        import psutil

        rss = self.process.memory_info().rss
        if self.children:
            for child in self.process.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:  # the child ended between listing and reading
                    continue
        return rss

    def sample(self) -> None:
        """Take one sample."""
        import torch

        self.rss = max(self.rss, self.current_rss())
        device, kind = self._torch_device()
        if kind == "cuda":
            self.peak_device_mb = max(self.peak_device_mb, torch.cuda.max_memory_allocated(device) / 2**20)
        elif kind == "mps":
            self.peak_device_mb = max(self.peak_device_mb, torch.mps.driver_allocated_memory() / 2**20)
        self.samples += 1

    @property
    def rss_mb(self) -> float:
        """Peak resident memory, MB."""
        return self.rss / 2**20


def call_peak_bytes(call: Callable[[], Any], device: Any = None) -> int:
    """The peak memory ``call()`` adds, bytes: on a CUDA ``device`` the device's allocated bytes, else the host's.

    On the host the measure is the resident set's high-water mark (Linux ``VmHWM``, reset first through
    ``/proc/self/clear_refs``; after giving freed heap back with ``malloc_trim``), so a peak however short is
    seen, whatever allocated it (PyTorch's CPU allocator, oneDNN's scratch buffers, ONNX Runtime's arena),
    which ``tracemalloc`` does not see. Where the mark cannot be reset, a thread samples the resident set
    every millisecond (a peak shorter than that may be missed). Other threads allocating meanwhile count too:
    measure while nothing else runs.
    """
    import torch

    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    _release_free_heap()
    before = _status_bytes("VmRSS")
    if before is not None and _reset_high_water_mark():
        call()
        peak = _status_bytes("VmHWM")
        if peak is not None:
            return max(0, peak - before)
    return _sampled_peak_bytes(call)


def _status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes; None where there is no such file."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    """Reset ``VmHWM`` to the current resident set (Linux 4.0 and later); False where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


#: Size (bytes) from which :func:`steady_heap` has glibc map each allocation on its own, given back when freed.
STEADY_HEAP_MMAP_BYTES = 64 * 1024

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache  # once per process: the setting holds until it ends
def steady_heap() -> bool:
    """Have the C heap give a large buffer back to the system when it is freed (glibc), for this process.

    glibc serves buffers below a threshold that it raises as the program runs (up to 32 MiB) from a heap
    that keeps freed pages: a stream of tiles then holds, besides what it uses, what earlier tiles left,
    by an amount that changes from run to run (measured: a peak of 1.05 to 1.8 times the plan). With
    a fixed threshold of :data:`STEADY_HEAP_MMAP_BYTES` (``mallopt(M_MMAP_THRESHOLD)``, which also fixes the
    trimming threshold) every larger buffer is mapped on its own and unmapped when freed, so the resident
    set follows the live memory: the network measured once predicts the stream (the exact tiling's
    memory plan), and the peak is lower. Its cost in time is measured by ``benchmarks/heap.py``.

    Called before the exact tiling's plan unless ``inference.steady_heap`` is false; it holds for the rest
    of the process (glibc has no way back to its moving threshold). A ``MALLOC_MMAP_THRESHOLD_`` set in the
    environment is the user's choice and is kept. Returns whether the heap is steady (False on other C
    libraries).
    """
    import os

    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    libc = _libc()
    try:
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, STEADY_HEAP_MMAP_BYTES)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, STEADY_HEAP_MMAP_BYTES)
        )
    except AttributeError:  # not glibc: its own policy stands
        return False


@functools.cache
def _libc() -> Any:
    """The C library (``ctypes``); its glibc-only functions raise ``AttributeError`` elsewhere."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):  # no C library to load by name: nothing to call
        return None


def _release_free_heap() -> None:
    """Give the C heap's free pages back (glibc), so that the next peak is not served from retained pages."""
    try:
        _libc().malloc_trim(0)
    except AttributeError:  # not glibc (or no C library): nothing to give back this way
        return


def _sampled_peak_bytes(call: Callable[[], Any]) -> int:
    """The peak resident set while ``call()`` runs, over its start, sampled every millisecond by a thread."""
    import threading

    peak = MemoryPeak(device="cpu")
    before = peak.current_rss()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak.sample()

    sampler = threading.Thread(target=sample, name="memory sampler", daemon=True)
    sampler.start()
    try:
        call()
    finally:
        done.set()
        sampler.join()
    peak.sample()
    return max(0, peak.rss - before)
