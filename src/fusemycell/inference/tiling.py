"""Tiling: where tiles go, blended (any network) or exact (a tile-invariant network).

Following nnU-Net: tiles overlap by ``overlap`` of their size, their starts are
spread so the last tile is flush with the volume's edge, and predictions are
blended with a Gaussian importance map (``sigma = tile / 8``) whose minimum is
lifted above zero so every voxel has weight. The map is separable, so the sum of
weights at a voxel is the product of three 1D sums: the blending normalizer
needs no volume-sized weight array.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fusemycell import normalization

logger = logging.getLogger(__name__)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start indices of tiles along one axis: the first at 0, the last flush with the edge.

    A volume shorter than the tile gets one tile (the tile is then the volume).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if size <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    count = math.ceil((size - tile) / step) + 1
    return sorted({int(round(v)) for v in np.linspace(0, size - tile, count)})


def gaussian_weights_1d(length: int, sigma_scale: float = 1 / 8) -> np.ndarray:
    """1D Gaussian importance along a tile (peak 1 at the centre), never zero."""
    if length == 1:
        return np.ones(1, dtype=np.float64)
    sigma = max(length * sigma_scale, 1e-3)
    positions = np.arange(length, dtype=np.float64) - (length - 1) / 2
    weights = np.exp(-0.5 * (positions / sigma) ** 2)
    return np.maximum(weights / weights.max(), 1e-3)


@dataclass(frozen=True)
class TileSettings:
    """How volumes are cut into tiles for prediction (``params:inference``'s tiling fields, in one object)."""

    mode: str = "auto"
    """``exact`` (halo tiles, tile-invariant models), ``blend`` (overlapping tiles) or ``auto`` (the model's)."""
    tile_zyx: tuple[int, int, int] | None = None
    """Tile read by the network (exact: halo included); null = planned from ``memory_gb`` / the card's tile."""
    overlap: float = 0.5
    """Blending: fraction of a tile shared with its neighbours."""
    batch_size: int = 4
    """Tiles per network call (planned exact tiles: one)."""
    memory_gb: float = 2.0
    """Exact tiling: memory for the tiles, the row of planes being predicted and the reads, GiB."""
    tta: bool = False
    """Average over flips along y and x."""


class TileGrid:
    """The tiles covering a volume, and the separable blending weights.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)``.
    tile
        Tile size; an axis shorter than the tile gets a tile of the axis's size.
    overlap
        Fraction of a tile shared with its neighbour (0.5 by default).
    """

    def __init__(self, shape: Sequence[int], tile: Sequence[int], overlap: float = 0.5):
        self.shape = tuple(int(s) for s in shape)
        self.tile = tuple(min(int(t), int(s)) for t, s in zip(tile, shape))
        self.overlap = float(overlap)
        self.starts = [tile_starts(s, t, overlap) for s, t in zip(self.shape, self.tile)]
        self.weights_1d = [gaussian_weights_1d(t) for t in self.tile]
        self.normaliser_1d = []
        for axis in range(3):
            total = np.zeros(self.shape[axis], dtype=np.float64)
            for start in self.starts[axis]:
                total[start : start + self.tile[axis]] += self.weights_1d[axis]
            self.normaliser_1d.append(total)

    def __len__(self) -> int:
        return len(self.starts[0]) * len(self.starts[1]) * len(self.starts[2])

    def tile_weights(self) -> np.ndarray:
        """The 3D importance map of one tile (float32)."""
        wz, wy, wx = self.weights_1d
        return (wz[:, None, None] * wy[None, :, None] * wx[None, None, :]).astype(np.float32)

    def normalizer(self, z0: int, z1: int) -> np.ndarray:
        """Sum of weights over planes ``[z0, z1)``: what the blended sum is divided by."""
        nz, ny, nx = self.normaliser_1d
        return (nz[z0:z1, None, None] * ny[None, :, None] * nx[None, None, :]).astype(np.float32)

    def yx_origins(self) -> list[tuple[int, int]]:
        """Origins ``(y, x)`` of the tiles in one row of tiles (one z start)."""
        return [(y, x) for y in self.starts[1] for x in self.starts[2]]


# -- exact tiling -------------------------------------------------------------------------------------
#
# A tile-invariant network (no per-tile statistics: ``UNetConfig.tile_invariant``) gives a voxel the same
# value whatever tile it is computed in, provided the tile holds the voxel's whole receptive field and
# starts on the pooling grid of the whole volume. Exact tiling cuts the volume into cores that partition
# it, reads each core with a halo of the network's reach (rounded up to its size multiple) and keeps only
# the core: no blending, each voxel computed once, the result equal to whole-volume prediction. The tile
# size is then only a speed and memory setting (CSBDeep's tiling, for U-Nets).


@dataclass(frozen=True)
class AxisSpan:
    """One tile along an axis: the core it writes and the range it reads (the core and its halo)."""

    core_start: int
    core_stop: int
    read_start: int
    read_stop: int

    @property
    def core_within_read(self) -> slice:
        """Where the core lies in what is read."""
        return slice(self.core_start - self.read_start, self.core_stop - self.read_start)

    @property
    def read_length(self) -> int:
        """Voxels read (what the network computes)."""
        return self.read_stop - self.read_start

    def flipped(self, size: int) -> AxisSpan:
        """The same span seen from the other end of an axis of ``size`` voxels."""
        return AxisSpan(size - self.core_stop, size - self.core_start, size - self.read_stop, size - self.read_start)


def halo_spans(size: int, core: int, halo: int) -> list[AxisSpan]:
    """Cores of ``core`` voxels from 0 (the last one shorter), each read with ``halo`` voxels on both sides.

    A core at least as long as the axis is the whole axis, read without a halo.
    """
    if core >= size:
        return [AxisSpan(0, size, 0, size)]
    spans = []
    for start in range(0, size, core):
        stop = min(size, start + core)
        spans.append(AxisSpan(start, stop, max(0, start - halo), min(size, stop + halo)))
    return spans


class HaloGrid:
    """Exact tiling of a volume: cores that partition it, each read with its halo.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)``.
    core
        Core size per axis: a multiple of the network's size multiple (or at least the axis).
    halo
        Voxels read on each side of a core (the network's reach rounded up to its size multiple,
        :func:`fusemycell.models.receptive_field.halo`), so that every read starts on the pooling grid.
    """

    def __init__(self, shape: Sequence[int], core: Sequence[int], halo: Sequence[int], *, planned: bool = False):
        self.shape = tuple(int(s) for s in shape)
        self.core = tuple(min(int(c), s) for c, s in zip(core, self.shape))
        self.halo = tuple(int(h) for h in halo)
        if min(self.core) < 1:
            raise ValueError(f"tile cores must be at least 1 voxel, got {self.core}")
        self.spans = [halo_spans(s, c, h) for s, c, h in zip(self.shape, self.core, self.halo)]
        self.planned = planned
        """True when :func:`exact_grid` sized the tiles from memory (one tile per network call)."""

    def __len__(self) -> int:
        return len(self.spans[0]) * len(self.spans[1]) * len(self.spans[2])

    @property
    def tile(self) -> tuple[int, int, int]:
        """The largest region a tile reads, ``(z, y, x)`` voxels."""
        return tuple(max(s.read_length for s in spans) for spans in self.spans)  # type: ignore[return-value]

    def evaluations_per_voxel(self) -> float:
        """Network voxel evaluations per output voxel: 1 for one tile, more for every halo computed twice."""
        factor = 1.0
        for spans, size in zip(self.spans, self.shape):
            factor *= sum(s.read_length for s in spans) / size
        return factor

    def yx_spans(self, flips: Sequence[int] = ()) -> tuple[list[AxisSpan], list[AxisSpan]]:
        """The y and x spans, in the volume's coordinates, of the tiling of the volume flipped along
        ``flips`` (axes -2 and/or -1): the tiles a flipped prediction is cut into, so that it too
        equals the whole flipped volume's prediction."""
        spans = []
        for axis in (1, 2):
            if axis - 3 in flips:
                size = self.shape[axis]
                spans.append([s.flipped(size) for s in halo_spans(size, self.core[axis], self.halo[axis])])
            else:
                spans.append(self.spans[axis])
        return spans[0], spans[1]


def _axis_candidates(size: int, multiple: int, halo: int) -> list[tuple[int, float, int]]:
    """``(core, evaluations factor, largest read)`` for every number of tiles along an axis."""
    candidates = {}
    for count in range(1, math.ceil(size / multiple) + 1):
        core = size if count == 1 else multiple * math.ceil(math.ceil(size / count) / multiple)
        spans = halo_spans(size, core, halo)
        if len(spans) != count and count > 1:
            continue
        factor = sum(s.read_length for s in spans) / size
        candidates[core] = (core, factor, max(s.read_length for s in spans))
        if len(candidates) >= 96:  # beyond that many tiles per axis the halos dominate: no better choice
            break
    return list(candidates.values())


def plan_cores(
    shape: Sequence[int],
    halo: Sequence[int],
    multiple: Sequence[int],
    fits: Callable[[tuple[int, int, int], tuple[int, int, int]], bool],
) -> tuple[int, int, int]:
    """The cores of the exact tiling with the fewest network evaluations whose tiles ``fits(core, tile)``.

    ``fits`` says whether a tiling with that core and that largest read fits in memory (it is called
    with growing tiles along x for every core along z and y). Ties go to fewer, larger tiles; when
    nothing fits, the smallest tiles are returned.
    """
    per_axis = [_axis_candidates(int(s), int(m), int(h)) for s, m, h in zip(shape, multiple, halo)]
    along_x = sorted(per_axis[2], key=lambda c: (c[2], c[1]))
    # the best x choice among the first k reads: fewest evaluations, then the larger tile
    best_prefix, best_x = [], None
    for candidate in along_x:
        if best_x is None or (candidate[1], -candidate[2]) < (best_x[1], -best_x[2]):
            best_x = candidate
        best_prefix.append(best_x)
    best: tuple[tuple[float, int], tuple[int, int, int]] | None = None
    for cz, fz, tz in per_axis[0]:
        for cy, fy, ty in per_axis[1]:
            low, high = 0, len(along_x)  # the number of x reads that fit (fits grows false with the read)
            while low < high:
                middle = (low + high) // 2
                cx, _, tx = along_x[middle]
                if fits((cz, cy, cx), (tz, ty, tx)):
                    low = middle + 1
                else:
                    high = middle
            if low == 0:
                continue
            cx, fx, tx = best_prefix[low - 1]
            key = (fz * fy * fx, -(tz * ty * tx))
            if best is None or key < best[0]:
                best = (key, (cz, cy, cx))
    if best is None:  # nothing fits: the smallest tiles
        return tuple(min(candidates, key=lambda c: c[2])[0] for candidates in per_axis)  # type: ignore[return-value]
    return best[1]


#: Share of ``memory_gb`` the exact tiling plans for; the rest is for the model's weights and the interpreter.
PLANNED_MEMORY_SHARE = 0.75

#: Output planes the file writer holds: 16 read ahead as uint16 (and two in hand), 5 in float32 in flight
#: (mapping to uint16, placing in the frame, the two planes interpolated back from a resampled grid).
WRITER_PLANE_BYTES = 18 * 2 + 5 * 4


@dataclass(frozen=True)
class HostLoad:
    """What the host holds around the network while it streams a volume (see :func:`host_bytes`)."""

    in_channels: int = 1
    """Network input channels (the single view, then position channels)."""
    flips: int = 1
    """Flip sets averaged (test-time augmentation: 4); more than one keeps a flipped copy of each batch."""
    read_ratio: float = 1.0
    """Source voxels read per network voxel (above 1 when the model's grid is coarser than the file's)."""
    resampled: bool = False
    """Whether the source is interpolated onto the network's grid (temporaries while reading)."""
    output_plane: int | None = None
    """Voxels of a plane of the written output (the file's grid); None: the network's plane."""
    raw_width: int | None = None
    """Voxels of a row of the file; None: the network's row."""
    pinned: bool = False
    """Whether each batch goes through page-locked buffers (CUDA): one in, two out."""


def host_bytes(shape: Sequence[int], core_z: int, tile: Sequence[int], load: HostLoad = HostLoad()) -> float:
    """Host memory (bytes) of exact streaming, besides the network: what :func:`exact_grid` plans with.

    Per voxel of the tile read (``C`` channels, float32 unless said):

    * in hand: the tile waiting for a batch, the next tile, their stacked batch (and with flips its
      flipped copy), and with pinned buffers the batch in and the prediction out twice;
    * being read in the background: the raw box (at most 4 bytes an item, ``read_ratio`` voxels per
      voxel), its normalisation, when resampled the interpolation's temporaries, and with position
      channels the channels and their concatenation; plus a raw plane's rows of the tile, twice.

    Per plane: the row of output planes being predicted (``core_z`` planes of the network's grid)
    and the writer's planes (:data:`WRITER_PLANE_BYTES` per voxel of an output plane). Fixed: two
    float32 chunks of normalisation (:data:`fusemycell.normalization.NORMALIZE_CHUNK_VOXELS`).
    """
    plane = int(shape[1]) * int(shape[2])
    voxels = int(tile[0]) * int(tile[1]) * int(tile[2])
    channels = load.in_channels
    in_hand = (3 + (load.flips > 1)) * 4 * channels + (4 * channels + 8 if load.pinned else 0)
    ratio = max(1.0, load.read_ratio)
    reading = ratio * (4 + 4) + (ratio * 8 + 4 if load.resampled else 0)
    if channels > 1:
        reading += 4 * (channels - 1) + 4 * channels
    raw_rows = 2 * 4 * ratio * int(tile[1]) * (load.raw_width or int(shape[2]))
    return (
        4.0 * core_z * plane
        + (in_hand + reading) * voxels
        + raw_rows
        + WRITER_PLANE_BYTES * (load.output_plane or plane)
        + 2 * 4 * normalization.NORMALIZE_CHUNK_VOXELS
    )


def planned_bytes(
    shape: Sequence[int], core_z: int, tile: Sequence[int], load: HostLoad, network_bytes_per_voxel: float
) -> tuple[float, float]:
    """``(host, network)`` bytes :func:`exact_grid` counts for a tiling: :func:`host_bytes` and the network's tile."""
    return host_bytes(shape, core_z, tile, load), network_bytes_per_voxel * int(tile[0]) * int(tile[1]) * int(tile[2])


def _zyx(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def exact_grid(
    shape: Sequence[int],
    *,
    halo: Sequence[int],
    multiple: Sequence[int],
    settings: TileSettings,
    load: HostLoad = HostLoad(),
    network_bytes_per_voxel: float = 256.0,
    device_bytes: float | None = None,
) -> HaloGrid:
    """The exact tiling of a volume of ``shape``: the given tile, or the one with fewest evaluations in memory.

    Memory counted (bytes): the network on a tile (``network_bytes_per_voxel`` per voxel read; on a GPU
    within ``device_bytes`` instead) and the host's buffers (:func:`host_bytes`: the row of planes
    being predicted, the tiles read, the writer's planes). Their sum stays within
    :data:`PLANNED_MEMORY_SHARE` of ``settings.memory_gb``; none of it grows with the volume's depth.

    A ``settings.tile_zyx`` too small to hold a core inside the halo (``2 * halo + multiple`` along an
    axis the volume exceeds) is set aside with a warning naming the setting, and the tiles are planned
    from ``memory_gb``: with exact tiling the tile is a speed setting, and a smaller one would only
    compute more halo.
    """
    shape = tuple(int(s) for s in shape)
    if settings.tile_zyx is not None:
        tile = tuple(int(t) for t in settings.tile_zyx)
        core = [size if t >= size else (t - 2 * h) // m * m for size, t, h, m in zip(shape, tile, halo, multiple)]
        if min(core) >= 1:
            return HaloGrid(shape, core, halo)
        logger.warning(
            "inference.tile_zyx %s is too small for exact tiling with this model (a tile needs %s voxels of context "
            "on each side of its core, so at least %s): tiles are sized from inference.memory_gb instead",
            _zyx(tile),
            _zyx(halo),
            _zyx([2 * h + m for h, m in zip(halo, multiple)]),
        )
    budget = settings.memory_gb * 2**30 * PLANNED_MEMORY_SHARE

    def fits(core: tuple[int, int, int], tile: tuple[int, int, int]) -> bool:
        host, network = planned_bytes(shape, core[0], tile, load, network_bytes_per_voxel)
        if device_bytes is not None:
            return host <= budget and network <= device_bytes
        return host + network <= budget

    return HaloGrid(shape, plan_cores(shape, halo, multiple, fits), halo, planned=True)
