"""What predicts a batch of tiles: the PyTorch network on its device, and test-time flip averaging.

A backend is any callable ``(N, C, z, y, x) float32 -> (N, 1, z, y, x)``; the ONNX Runtime one is
:class:`fusemycell.inference.onnx_backend.OnnxBackend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from fusemycell.devices import CpuThreads, memory_format, resolve_device, resolve_precision


class Backend(Protocol):
    """Predicts a batch ``(N, C, z, y, x)`` float32 (the single view, then any position channels)
    -> ``(N, 1, z, y, x)``."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """A PyTorch network on a device (``auto``: CUDA, then MPS, then CPU), with mixed precision where useful.

    Runs under ``torch.inference_mode``. On CUDA (bf16 autocast where supported) each batch goes
    through a reused page-locked (pinned) host buffer with asynchronous copies both ways; on other
    devices the same call is a plain copy.
    """

    def __init__(self, network: torch.nn.Module, device: str = "auto", amp: bool = True):
        self.device = resolve_device(device, setting="inference.device")
        # on a CPU, the threads of the CPUs this process may use (affinity, container quota), not every core
        self.threads = CpuThreads() if self.device.type == "cpu" else None
        self.precision = resolve_precision(self.device, amp)
        self.memory_format = memory_format(self.device)
        self.network = network.to(self.device, memory_format=self.memory_format).eval()
        self._pinned_in: torch.Tensor | None = None
        self._pinned_out: torch.Tensor | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode(), self.precision.autocast(self.device):
            output = self.network(self._to_device(host).contiguous(memory_format=self.memory_format))
        return self._to_host(output)

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cuda":
            return host.to(self.device)
        if self._pinned_in is None or self._pinned_in.shape != host.shape:
            self._pinned_in = torch.empty(host.shape, dtype=torch.float32, pin_memory=True)
        # the previous call synchronised on its output: no copy from this buffer is still in flight
        self._pinned_in.copy_(host)
        return self._pinned_in.to(self.device, non_blocking=True)

    def _to_host(self, output: torch.Tensor) -> np.ndarray:
        if self.device.type != "cuda":
            return output.float().cpu().numpy()
        if self._pinned_out is None or self._pinned_out.shape != output.shape:
            self._pinned_out = torch.empty(output.shape, dtype=torch.float32, pin_memory=True)
        self._pinned_out.copy_(output, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return self._pinned_out.numpy().copy()  # the buffer is reused by the next call


class FlipAveraging:
    """Test-time augmentation: the mean prediction over flips along x, y (and z)."""

    def __init__(self, backend: Backend, axes: Sequence[int] = (-1, -2)):
        self.backend = backend
        self.flip_sets: list[tuple[int, ...]] = [()]
        for axis in axes:
            self.flip_sets += [flips + (axis,) for flips in self.flip_sets]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None  # (N, 1, ...): sized from the first prediction, not the input
        for flips in self.flip_sets:
            flipped = np.flip(batch, flips) if flips else batch
            prediction = self.backend(np.ascontiguousarray(flipped))
            prediction = np.flip(prediction, flips) if flips else prediction
            total = prediction.astype(np.float32, copy=True) if total is None else total + prediction
        return total / len(self.flip_sets)
