"""Peak memory of this process (and its worker processes) and of the accelerator: one sampler for all.

The training engine samples it between batches (its per-epoch ``peak_rss_mb``); the
memory-monitor hooks sample it from a thread while a node runs and while its outputs
are saved (``memory.<pipeline>.<node>.peak_rss_mb``).
"""

from __future__ import annotations

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
