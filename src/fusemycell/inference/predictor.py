"""Streaming sliding-window prediction.

:class:`StreamingPrediction` is an array-like whose plane ``z`` is computed on
demand: it reads the input one row of tiles at a time (a slab of ``tile_z``
planes), predicts the tiles in batches, adds them with Gaussian weights into a
window of accumulated planes, and hands out each plane once no later tile can
touch it. Written with :func:`fusemycell.io.tiff.write_volume`, a prediction
therefore streams from input file to output file with memory bounded by one
slab, the accumulation window and a batch of tiles, whatever the volume's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from fusemycell.inference.background import BackgroundIterator
from fusemycell.inference.tiling import TileGrid
from fusemycell.position import PositionField
from fusemycell.progress import Progress
from fusemycell.training.devices import resolve_device, resolve_precision


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
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, amp)
        self.network = network.to(self.device).eval()
        self._pinned_in: torch.Tensor | None = None
        self._pinned_out: torch.Tensor | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode(), self.precision.autocast(self.device):
            output = self.network(self._to_device(host))
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

    def batch_size_for(self, tile: Sequence[int], requested: int, *, limit: int = 64, fraction: float = 0.6) -> int:
        """Tiles per call for this device: on CUDA as many as ``fraction`` of the free memory holds, else ``requested``.

        The memory of one tile is measured with a probe forward pass of two tiles.
        """
        if self.device.type != "cuda":
            return int(requested)
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        channels = int(getattr(getattr(self.network, "config", None), "in_channels", 1))
        probe = torch.zeros((2, channels, *(int(t) for t in tile)), device=self.device)
        with torch.inference_mode(), self.precision.autocast(self.device):
            self.network(probe)
        per_tile = max(1, (torch.cuda.max_memory_allocated(self.device) - before) // 2)
        del probe
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(limit, fraction * free // per_tile)))


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


class StreamingPrediction:
    """Array-like prediction of ``source`` (a normalised array-like), computed plane by plane.

    Planes must be read in increasing order (as a TIFF writer does); each is
    handed out once and then forgotten.

    Parameters
    ----------
    source
        Array-like ``(z, y, x)``; ``source[z0:z1]`` returns float32 planes on the network's scale.
    backend
        Predicts a batch of tiles.
    tile, overlap, batch_size
        Tiling (see :class:`~fusemycell.inference.tiling.TileGrid`) and tiles per network call.
    transform, dtype
        Applied to every finished plane (e.g. mapping back to uint16), and the resulting type.
    read_ahead
        Read (and normalise) the next slab in a background thread while the network runs on
        this one: one more slab in memory, same result.
    position
        The source's position field (:class:`fusemycell.position.PositionField`): its channels for
        each tile follow the single view in the network input.
    progress
        Show a bar / log a summary line (off for the per-epoch scoring of validation volumes).
    """

    def __init__(
        self,
        source: Any,
        backend: Backend,
        tile: Sequence[int],
        *,
        overlap: float = 0.5,
        batch_size: int = 4,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        dtype: Any = np.float32,
        description: str = "sliding-window prediction",
        read_ahead: bool = False,
        position: PositionField | None = None,
        progress: bool = True,
    ):
        self.source = source
        self.show_progress = bool(progress)
        self.position = position
        self.backend = backend
        self.shape = tuple(int(s) for s in source.shape)
        self.grid = TileGrid(self.shape, tile, overlap)
        self.batch_size = max(1, int(batch_size))
        self.transform = transform
        self.dtype = np.dtype(dtype)
        self._weights = self.grid.tile_weights()
        self._rows = list(self.grid.starts[0])
        self._next_row = 0
        self._complete_below = 0  # planes below this index can no longer change
        self._sums: dict[int, np.ndarray] = {}
        self._next_plane = 0
        self.peak_window_planes = 0
        self.description = description
        self.read_ahead = bool(read_ahead)
        self._slabs: BackgroundIterator | None = None
        self._progress: Progress | None = None

    @property
    def ndim(self) -> int:
        """Always 3."""
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def _process_row(self) -> None:
        z0 = self._rows[self._next_row]
        tile_z, tile_y, tile_x = self.grid.tile
        if self.read_ahead:
            if self._slabs is None:
                self._slabs = BackgroundIterator(
                    _slabs(self.source, self._rows, tile_z), depth=1, description=f"reading for {self.description}"
                )
            slab = next(self._slabs)
        else:
            slab = _read_slab(self.source, z0, tile_z)
        for z in range(z0, z0 + tile_z):
            if z not in self._sums:
                self._sums[z] = np.zeros(self.shape[1:], dtype=np.float32)
        origins = self.grid.yx_origins()
        if self._progress is None:
            self._progress = Progress(
                self.description, total=len(self._rows) * len(origins), unit="tile", enabled=self.show_progress
            )
        for first in range(0, len(origins), self.batch_size):
            chunk = origins[first : first + self.batch_size]
            batch = np.stack([self._tile_input(slab, z0, y, x) for y, x in chunk])
            predictions = self.backend(batch)[:, 0] * self._weights
            for (y, x), prediction in zip(chunk, predictions):
                for dz in range(tile_z):
                    self._sums[z0 + dz][y : y + tile_y, x : x + tile_x] += prediction[dz]
            self._progress.update(len(chunk))
        del slab
        self._next_row += 1
        if self._next_row == len(self._rows):
            self._progress.close()
            if self._slabs is not None:
                self._slabs.close()
        self._complete_below = self._rows[self._next_row] if self._next_row < len(self._rows) else self.shape[0]
        self.peak_window_planes = max(self.peak_window_planes, len(self._sums))

    def _tile_input(self, slab: np.ndarray, z0: int, y: int, x: int) -> np.ndarray:
        """``(channels, *tile)``: the tile of the single view, then its position channels."""
        tile_z, tile_y, tile_x = self.grid.tile
        single_view = slab[None, :, y : y + tile_y, x : x + tile_x]
        if self.position is None:
            return single_view
        return np.concatenate([single_view, self.position.region((z0, y, x), self.grid.tile)])

    def _plane(self, z: int) -> np.ndarray:
        if z < self._next_plane:
            raise IndexError(f"plane {z} was already handed out; StreamingPrediction reads planes in order")
        while z >= self._complete_below:
            self._process_row()
        for skipped in range(self._next_plane, z):
            self._sums.pop(skipped, None)
        self._next_plane = z + 1
        plane = self._sums.pop(z) / self.grid.normalizer(z, z + 1)[0]
        return self.transform(plane) if self.transform is not None else plane

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            z_key, rest = key[0], key[1:]
        else:
            z_key, rest = key, ()
        if isinstance(z_key, (int, np.integer)):
            plane = self._plane(int(z_key) % self.shape[0])
            return plane[rest] if rest else plane
        indices = range(self.shape[0])[z_key]
        planes = np.stack([self._plane(z) for z in indices]) if len(indices) else np.empty((0, *self.shape[1:]))
        return planes[(slice(None), *rest)] if rest else planes


def _read_slab(source: Any, z0: int, depth: int) -> np.ndarray:
    return np.asarray(source[z0 : z0 + depth], dtype=np.float32)


def _slabs(source: Any, rows: Sequence[int], depth: int) -> Any:
    """The slab of every row of tiles, in order (a generator that holds no :class:`StreamingPrediction`)."""
    for z0 in list(rows):
        yield _read_slab(source, z0, depth)


def predict_array(
    volume: np.ndarray,
    backend: Backend,
    tile: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 4,
    position: PositionField | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Sliding-window prediction of an in-memory (normalised) volume, float32 (``position``: its field)."""
    stream = StreamingPrediction(
        np.asarray(volume, dtype=np.float32),
        backend,
        tile,
        overlap=overlap,
        batch_size=batch_size,
        position=position,
        progress=progress,
    )
    output = np.empty(stream.shape, dtype=np.float32)  # filled plane by plane: one copy of the result
    for z in range(stream.shape[0]):
        output[z] = stream[z]
    return output
