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
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from fusemycell.inference.background import BackgroundIterator
from fusemycell.inference.tiling import AxisSpan, HaloGrid, TileGrid, TileSettings, exact_grid
from fusemycell.models.config import UNetConfig
from fusemycell.models.receptive_field import halo as receptive_halo
from fusemycell.position import PositionField
from fusemycell.progress import Progress
from fusemycell.training.devices import memory_format, resolve_device, resolve_precision


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


class PlaneStream:
    """A sequential array-like ``(z, y, x)``: planes computed on demand, read in increasing order.

    Subclasses set ``shape`` and implement ``_plane(z)``; each plane is handed out once.
    """

    shape: tuple[int, int, int]

    @property
    def ndim(self) -> int:
        """Always 3."""
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def _plane(self, z: int) -> np.ndarray:
        raise NotImplementedError

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


class StreamingPrediction(PlaneStream):
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


@dataclass(frozen=True)
class _Band:
    """Planes and rows of the single view (and its position channels) that one row of tiles reads."""

    z_span: AxisSpan
    y_span: AxisSpan
    x_spans: tuple[AxisSpan, ...]
    flips: tuple[int, ...]
    data: np.ndarray
    """``(channels, z, y, x)`` over the spans' reads, every column."""


class ExactPrediction(PlaneStream):
    """Array-like prediction of ``source`` with exact tiling (:class:`~fusemycell.inference.tiling.HaloGrid`).

    For a tile-invariant network the result equals the network applied to the whole volume: each
    tile is read with its halo, only its core is kept, nothing is blended. Rows of cores along z are
    predicted one at a time: each row reads bands of ``(core + halo)`` planes and rows, one band at a
    time (``read_ahead``: the next band in a background thread), predicts their tiles one network call
    each (tiles of one shape are batched up to ``batch_size``), and fills a buffer of the row's planes,
    which are handed out in order. Memory: the row's planes, two bands and the network's tile.

    ``flip_sets`` are the flips averaged by test-time augmentation (``[()]``: none); each flip is tiled
    in the flipped volume's own coordinates, so the average equals the whole-volume average too.
    """

    def __init__(
        self,
        source: Any,
        backend: Backend,
        grid: HaloGrid,
        *,
        flip_sets: Sequence[tuple[int, ...]] = ((),),
        batch_size: int = 1,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        description: str = "exact tiled prediction",
        read_ahead: bool = False,
        position: PositionField | None = None,
        progress: bool = True,
    ):
        self.source = source
        self.backend = backend
        self.shape = tuple(int(s) for s in source.shape)
        if tuple(grid.shape) != self.shape:
            raise ValueError(f"the tiling is for shape {grid.shape}, the volume has {self.shape}")
        self.grid = grid
        self.flip_sets = [tuple(flips) for flips in flip_sets]
        self.batch_size = max(1, int(batch_size))
        self.transform = transform
        self.position = position
        self.description = description
        self.read_ahead = bool(read_ahead)
        self.show_progress = bool(progress)
        self._rows = list(grid.spans[0])
        self._row: np.ndarray | None = None
        self._row_index = -1
        self._next_plane = 0
        self._bands: Any = None
        self._progress: Progress | None = None

    def _band_reads(self) -> Any:
        """Every band the prediction reads, in order (a generator: it may run in a background thread)."""
        for z_span in self._rows:
            for flips in self.flip_sets:
                y_spans, x_spans = self.grid.yx_spans(flips)
                for y_span in y_spans:
                    yield _Band(z_span, y_span, tuple(x_spans), flips, self._read_band(z_span, y_span))

    def _read_band(self, z_span: AxisSpan, y_span: AxisSpan) -> np.ndarray:
        """``(channels, z, y, x)``: the single view over the spans' reads, then its position channels."""
        block = np.asarray(
            self.source[z_span.read_start : z_span.read_stop, y_span.read_start : y_span.read_stop], dtype=np.float32
        )[None]
        if self.position is None:
            return block
        origin = (z_span.read_start, y_span.read_start, 0)
        return np.concatenate([block, self.position.region(origin, block.shape[1:])])

    def _predict_row(self, index: int) -> np.ndarray:
        z_span = self._rows[index]
        row = np.zeros((z_span.core_stop - z_span.core_start, *self.shape[1:]), dtype=np.float32)
        if self._bands is None:
            reads = self._band_reads()
            self._bands = (
                BackgroundIterator(reads, depth=1, description=f"reading for {self.description}")
                if (self.read_ahead)
                else reads
            )
            self._progress = Progress(
                self.description, total=len(self.grid) * len(self.flip_sets), unit="tile", enabled=self.show_progress
            )
        for _ in range(len(self.flip_sets) * len(self.grid.spans[1])):
            self._predict_band(row, next(self._bands))
        if len(self.flip_sets) > 1:
            row /= len(self.flip_sets)
        if index == len(self._rows) - 1:
            self._progress.close()
            if isinstance(self._bands, BackgroundIterator):
                self._bands.close()
        return row

    def _predict_band(self, row: np.ndarray, band: _Band) -> None:
        """Predict the band's tiles, batched by shape, and add their cores to ``row``."""
        z_core, y_core = band.z_span.core_within_read, band.y_span.core_within_read
        y_out = slice(band.y_span.core_start, band.y_span.core_stop)
        pending: list[AxisSpan] = []

        def flush() -> None:
            batch = np.stack([band.data[..., s.read_start : s.read_stop] for s in pending])
            if band.flips:
                batch = np.ascontiguousarray(np.flip(batch, band.flips))
            predictions = self.backend(batch)[:, 0]
            if band.flips:
                predictions = np.flip(predictions, band.flips)
            for span, prediction in zip(pending, predictions):
                row[:, y_out, span.core_start : span.core_stop] += prediction[z_core, y_core, span.core_within_read]
            self._progress.update(len(pending))
            pending.clear()

        for span in band.x_spans:
            if pending and (len(pending) == self.batch_size or span.read_length != pending[0].read_length):
                flush()
            pending.append(span)
        flush()

    def _plane(self, z: int) -> np.ndarray:
        if z < self._next_plane:
            raise IndexError(f"plane {z} was already handed out; ExactPrediction reads planes in order")
        while self._row_index < 0 or z >= self._rows[self._row_index].core_stop:
            self._row_index += 1
            self._row = None  # the previous row's planes are all handed out (or skipped)
            self._row = self._predict_row(self._row_index)
        self._next_plane = z + 1
        plane = self._row[z - self._rows[self._row_index].core_start]
        # a copy: a view would keep the whole row alive in whoever holds the plane
        return self.transform(plane) if self.transform is not None else plane.copy()


def _read_slab(source: Any, z0: int, depth: int) -> np.ndarray:
    return np.asarray(source[z0 : z0 + depth], dtype=np.float32)


def _slabs(source: Any, rows: Sequence[int], depth: int) -> Any:
    """The slab of every row of tiles, in order (a generator that holds no :class:`StreamingPrediction`)."""
    for z0 in list(rows):
        yield _read_slab(source, z0, depth)


class TilingError(ValueError):
    """The requested tiling cannot be used with this model; the message says what to set instead."""


def network_bytes_per_voxel(architecture: UNetConfig, element_bytes: int) -> float:
    """Approximate peak memory of one forward pass per voxel of its input (inference, no gradients).

    About seven feature maps of the full-resolution width live at once (the skip, the upsampled
    features, their concatenation, a convolution's output), plus the float32 input and output:
    measured 245 bytes (float32) and 132 (bf16) for 8 base channels, 839 (float32) for 32.
    """
    return element_bytes * (7 * architecture.channels(0) + 2 * architecture.in_channels) + 8


def _element_bytes(backend: Any) -> int:
    precision = getattr(backend, "precision", None)
    return 2 if precision is not None and precision.enabled else 4


def _device_bytes(backend: Any) -> float | None:
    """On a GPU, the memory a tile may take there (half the free memory); None on the host."""
    device = getattr(backend, "device", None)
    if device is None or device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return 0.5 * free


def resolve_tiling(architecture: UNetConfig, settings: TileSettings) -> str:
    """``exact`` or ``blend`` for this model: ``auto`` picks exact for tile-invariant networks."""
    if settings.mode == "blend":
        return "blend"
    if settings.mode == "exact" and not architecture.tile_invariant:
        raise TilingError(
            f"inference.tiling is exact, but this model normalises every tile by its own statistics "
            f"(normalization: {architecture.normalization}), so its prediction depends on how the volume is cut; "
            "use inference.tiling: blend (or auto), or a model trained with normalization: none"
        )
    return "exact" if architecture.tile_invariant else "blend"


def predict_volume(
    source: Any,
    backend: Backend,
    architecture: UNetConfig,
    settings: TileSettings,
    *,
    blend_tile: Sequence[int],
    position: PositionField | None = None,
    description: str = "prediction",
    read_ahead: bool = False,
    progress: bool = True,
) -> StreamingPrediction | ExactPrediction:
    """The sequential array-like prediction of ``source`` (normalised, ZYX) with the model's tiling.

    Exact tiling (:func:`resolve_tiling`) for tile-invariant networks: tiles planned from
    ``settings.memory_gb`` (or ``settings.tile_zyx``), the result equal to whole-volume prediction.
    Blending otherwise, with ``settings.tile_zyx`` or ``blend_tile`` (the card's tile).
    """
    shape = tuple(int(s) for s in source.shape)
    tta = FlipAveraging(backend) if settings.tta else None
    if resolve_tiling(architecture, settings) == "blend":
        return StreamingPrediction(
            source,
            tta or backend,
            settings.tile_zyx or blend_tile,
            overlap=settings.overlap,
            batch_size=settings.batch_size,
            description=description,
            read_ahead=read_ahead,
            position=position,
            progress=progress,
        )
    grid = exact_grid(
        shape,
        halo=receptive_halo(architecture),
        multiple=architecture.size_multiple,
        settings=settings,
        in_channels=architecture.in_channels,
        network_bytes_per_voxel=network_bytes_per_voxel(architecture, _element_bytes(backend)),
        device_bytes=_device_bytes(backend),
    )
    return ExactPrediction(
        source,
        backend,
        grid,
        flip_sets=tta.flip_sets if tta is not None else ((),),
        batch_size=settings.batch_size if settings.tile_zyx is not None else 1,
        description=description,
        read_ahead=read_ahead,
        position=position,
        progress=progress,
    )


def read_all(stream: Any) -> np.ndarray:
    """Every plane of a sequential array-like, as one float32 array."""
    output = np.empty(tuple(stream.shape), dtype=np.float32)
    for z in range(output.shape[0]):
        output[z] = stream[z]
    return output


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
    return read_all(stream)  # filled plane by plane: one copy of the result
