"""Streaming prediction: array-likes whose planes are predicted on demand, in order, with bounded memory.

:class:`StreamingPrediction` blends overlapping tiles: it reads the input one row of tiles at a time
(a slab of ``tile_z`` planes), predicts the tiles in batches, adds them with Gaussian weights into a
window of accumulated planes, and hands out each plane once no later tile can touch it.
:class:`ExactPrediction` keeps only the core of each tile read with its halo (exact tiling). Written
with :func:`fusemycell.io.tiff.write_volume`, a prediction therefore streams from input file to
output file with memory bounded by a slab, the planes being predicted and a batch of tiles, whatever
the volume's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusemycell.inference.backends import Backend
from fusemycell.inference.read_ahead import BackgroundIterator
from fusemycell.inference.tiling import AxisSpan, HaloGrid, TileGrid, TileSettings
from fusemycell.position import PositionField
from fusemycell.progress import Progress


@dataclass(frozen=True)
class StreamOptions:
    """How a prediction stream runs; none of it changes the result."""

    description: str | None = None
    """What the progress bar and the reader thread are called (None: the stream's own name)."""
    read_ahead: bool = False
    """Read (and normalise) the next slab or tile in a background thread while the network runs on
    this one: one more in memory, same result."""
    progress: bool = True
    """Show a bar / log a summary line (off for the per-epoch scoring of validation volumes)."""


class PlaneStream:
    """A sequential array-like ``(z, y, x)``: planes computed on demand, read in increasing order.

    Subclasses set ``shape`` and implement ``_plane(z)``; each plane is handed out once.
    """

    shape: tuple[int, int, int]
    dtype = np.dtype(np.float32)

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
    tiling
        ``tile_zyx`` (set), ``overlap`` (see :class:`~fusemycell.inference.tiling.TileGrid`) and
        ``batch_size``, the tiles per network call.
    position
        The source's position field (:class:`fusemycell.position.PositionField`): its channels for
        each tile follow the single view in the network input.
    options
        Description, read-ahead and progress (:class:`StreamOptions`).
    """

    def __init__(
        self,
        source: Any,
        backend: Backend,
        tiling: TileSettings,
        *,
        position: PositionField | None = None,
        options: StreamOptions = StreamOptions(),
    ):
        if tiling.tile_zyx is None:
            raise ValueError("blending needs a tile size (tiling.tile_zyx)")
        self.source = source
        self.backend = backend
        self.position = position
        self.shape = tuple(int(s) for s in source.shape)
        self.grid = TileGrid(self.shape, tiling.tile_zyx, tiling.overlap)
        self.batch_size = max(1, int(tiling.batch_size))
        self.description = options.description or "sliding-window prediction"
        self.read_ahead = options.read_ahead
        self.show_progress = options.progress
        self._weights = self.grid.tile_weights()
        self._rows = list(self.grid.starts[0])
        self._next_row = 0
        self._complete_below = 0  # planes below this index can no longer change
        self._sums: dict[int, np.ndarray] = {}
        self._next_plane = 0
        self.peak_window_planes = 0
        """The most planes accumulated at once so far: what bounds this stream's memory."""
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
        return self._sums.pop(z) / self.grid.normalizer(z, z + 1)[0]


@dataclass(frozen=True)
class _TileRead:
    """One tile of the single view (and its position channels), read with its halo."""

    z_span: AxisSpan
    y_span: AxisSpan
    x_span: AxisSpan
    flips: tuple[int, ...]
    data: np.ndarray
    """``(channels, z, y, x)`` over the spans' reads."""


class ExactPrediction(PlaneStream):
    """Array-like prediction of ``source`` with exact tiling (:class:`~fusemycell.inference.tiling.HaloGrid`).

    For a tile-invariant network the result equals the network applied to the whole volume: each
    tile is read with its halo, only its core is kept, nothing is blended. Rows of cores along z are
    predicted one at a time: each tile of a row is read from ``source`` with its halo (``read_ahead``:
    the next tile in a background thread), predicted (tiles of one shape batched up to
    ``batch_size``), and its core fills a buffer of the row's planes, which are handed out in order.
    Memory: the row's planes, the tiles in hand and the network's tile
    (:func:`~fusemycell.inference.tiling.host_bytes`).

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
        position: PositionField | None = None,
        options: StreamOptions = StreamOptions(),
    ):
        self.source = source
        self.backend = backend
        self.shape = tuple(int(s) for s in source.shape)
        if tuple(grid.shape) != self.shape:
            raise ValueError(f"the tiling is for shape {grid.shape}, the volume has {self.shape}")
        self.grid = grid
        self.flip_sets = [tuple(flips) for flips in flip_sets]
        self.batch_size = max(1, int(batch_size))
        self.position = position
        self.description = options.description or "exact tiled prediction"
        self.read_ahead = options.read_ahead
        self.show_progress = options.progress
        self._rows = list(grid.spans[0])
        self._row: np.ndarray | None = None
        self._row_index = -1
        self._next_plane = 0
        self._tiles: Any = None
        self._progress: Progress | None = None

    def _tile_reads(self) -> Any:
        """Every tile the prediction reads, in order (a generator: it may run in a background thread)."""
        for z_span in self._rows:
            for flips in self.flip_sets:
                y_spans, x_spans = self.grid.yx_spans(flips)
                for y_span in y_spans:
                    for x_span in x_spans:
                        yield _TileRead(z_span, y_span, x_span, flips, self._read_tile(z_span, y_span, x_span))

    def _read_tile(self, z_span: AxisSpan, y_span: AxisSpan, x_span: AxisSpan) -> np.ndarray:
        """``(channels, z, y, x)``: the single view over the spans' reads, then its position channels."""
        spans = (z_span, y_span, x_span)
        block = np.asarray(self.source[tuple(slice(s.read_start, s.read_stop) for s in spans)], dtype=np.float32)
        if self.position is None:
            return block[None]
        origin = tuple(s.read_start for s in spans)
        return np.concatenate([block[None], self.position.region(origin, block.shape)])

    def _predict_row(self, index: int) -> np.ndarray:
        z_span = self._rows[index]
        row = np.zeros((z_span.core_stop - z_span.core_start, *self.shape[1:]), dtype=np.float32)
        if self._tiles is None:
            reads = self._tile_reads()
            self._tiles = (
                BackgroundIterator(reads, depth=1, description=f"reading for {self.description}")
                if self.read_ahead
                else reads
            )
            self._progress = Progress(
                self.description, total=len(self.grid) * len(self.flip_sets), unit="tile", enabled=self.show_progress
            )
        pending: list[_TileRead] = []
        for _ in range(len(self.flip_sets) * len(self.grid.spans[1]) * len(self.grid.spans[2])):
            tile = next(self._tiles)
            if pending and (
                len(pending) == self.batch_size
                or (tile.data.shape, tile.flips) != (pending[0].data.shape, pending[0].flips)
            ):
                self._predict_batch(row, pending)
            pending.append(tile)
        self._predict_batch(row, pending)
        if len(self.flip_sets) > 1:
            row /= len(self.flip_sets)
        if index == len(self._rows) - 1:
            self._progress.close()
            if isinstance(self._tiles, BackgroundIterator):
                self._tiles.close()
        return row

    def _predict_batch(self, row: np.ndarray, pending: list[_TileRead]) -> None:
        """Predict tiles of one shape and one flip in one call, add their cores to ``row``; empty ``pending``."""
        flips = pending[0].flips
        batch = np.stack([tile.data for tile in pending])
        if flips:
            batch = np.ascontiguousarray(np.flip(batch, flips))
        predictions = self.backend(batch)[:, 0]
        if flips:
            predictions = np.flip(predictions, flips)
        for tile, prediction in zip(pending, predictions):
            core = (tile.z_span.core_within_read, tile.y_span.core_within_read, tile.x_span.core_within_read)
            y_out = slice(tile.y_span.core_start, tile.y_span.core_stop)
            x_out = slice(tile.x_span.core_start, tile.x_span.core_stop)
            row[:, y_out, x_out] += prediction[core]
        self._progress.update(len(pending))
        pending.clear()

    def _plane(self, z: int) -> np.ndarray:
        if z < self._next_plane:
            raise IndexError(f"plane {z} was already handed out; ExactPrediction reads planes in order")
        while self._row_index < 0 or z >= self._rows[self._row_index].core_stop:
            self._row_index += 1
            self._row = None  # the previous row's planes are all handed out (or skipped)
            self._row = self._predict_row(self._row_index)
        self._next_plane = z + 1
        plane = self._row[z - self._rows[self._row_index].core_start]
        return plane.copy()  # a view would keep the whole row alive in whoever holds the plane


def _read_slab(source: Any, z0: int, depth: int) -> np.ndarray:
    return np.asarray(source[z0 : z0 + depth], dtype=np.float32)


def _slabs(source: Any, rows: Sequence[int], depth: int) -> Any:
    """The slab of every row of tiles, in order (a generator that holds no :class:`StreamingPrediction`)."""
    for z0 in list(rows):
        yield _read_slab(source, z0, depth)
