"""Tiling: where tiles go, blended (any network) or exact (a tile-invariant network).

Following nnU-Net: tiles overlap by ``overlap`` of their size, their starts are spread so the last tile is
flush with the volume's edge, and predictions are blended with a Gaussian importance map (``sigma = tile / 8``)
whose minimum is lifted above zero so every voxel has weight. The map is separable, so the sum of weights at a
voxel is the product of three 1D sums: the blending normalizer needs no volume-sized weight array.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from fusemycell.configuration import StrictConfig
from fusemycell.errors import Setting, UserError
from fusemycell.inference.memory_plan import PLANNED_MEMORY_SHARE, HostLoad, planned_bytes

PositiveInt = Annotated[int, Field(ge=1)]

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


TilingMode = Literal["auto", "exact", "blend"]
"""How tiles are combined: ``exact`` (halo tiles, tile-invariant models), ``blend`` or ``auto`` (the model's)."""


class TileSettings(StrictConfig):
    """How volumes are cut into tiles: the tiling fields of ``params:inference``, defined once.

    :class:`~fusemycell.inference.settings.InferenceSettings` inherits these fields; the predictor, its
    streams, training's whole-volume validation and the guard take this object alone.
    """

    tiling: TilingMode = "auto"
    """``exact``: tiles read with a halo of the network's reach, only their cores kept; the result equals the
    whole volume's prediction, each voxel computed about once (tile-invariant models: ``normalization: none``).
    ``blend``: overlapping tiles averaged with Gaussian weights (models that normalise each tile, and model
    files from before exact tiling). ``auto``: exact where the model allows it, else blend."""
    memory_gb: float = Field(default=2.0, gt=0)
    """Exact tiling: the memory a prediction may take (the network on a tile, measured once per model, the
    tiles read, the planes being predicted and written), GiB; the largest tiles that fit are used. A speed
    setting only: the result does not depend on it. Too little to tile the volume at most
    27 network evaluations per voxel is refused, naming a value that works."""
    steady_heap: bool = True
    """Exact tiling: freed memory goes back to the system at once (glibc, :func:`fusemycell.memory.steady_heap`):
    a peak within 10 % of the plan, below glibc's own, and a shorter plan (``benchmarks/heap.py``)."""
    tile_zyx: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None
    """Tile size, voxels (each at least 1). Exact tiling: the region the network reads, halo included
    (null = the largest that fits ``memory_gb``). Blending: null = the model card's tile (the training patch).
    A tile that would cost more than 27 network evaluations per voxel, or under 1024 voxels, is refused."""
    overlap: float = Field(default=0.5, ge=0, lt=1)
    """Blending: fraction of a tile shared with its neighbours."""
    batch_size: int = Field(default=4, ge=1)
    """Tiles per network call (blending; exact tiling with ``tile_zyx`` set. Planned exact tiles go one
    per call: they are as large as memory allows)."""
    tta: bool = False
    """Test-time augmentation: average over flips along y and x."""


#: Network evaluations per output voxel beyond which a tiling is refused: blending with an overlap of 2/3
#: (three tiles over every voxel along each axis), or exact tiles whose cores are no larger than their halo.
#: The default blending (overlap 0.5) costs about 8, planned exact tiles 1 to 2.
MAX_EVALUATIONS_PER_VOXEL = 27.0

#: Voxels a tile must hold (unless it is the whole volume): below, a network call is mostly its fixed cost
#: and a 64x512x512 volume takes millions of calls.
MIN_TILE_VOXELS = 1024


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

    def evaluations_per_voxel(self) -> float:
        """Network voxel evaluations per output voxel: the tiles' voxels over the volume's."""
        factor = 1.0
        for starts, tile, size in zip(self.starts, self.tile, self.shape):
            factor *= len(starts) * tile / size
        return factor

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


def check_blend_tiling(shape: Sequence[int], settings: TileSettings, *, card_tile: Sequence[int]) -> TileGrid:
    """The blended tiling of a volume of ``shape`` with ``settings.tile_zyx``, refused when not worth running.

    Raises
    ------
    UserError
        When tiles hold fewer than :data:`MIN_TILE_VOXELS` voxels (less than the volume) or the overlap
        makes the network compute each voxel more than :data:`MAX_EVALUATIONS_PER_VOXEL` times: the
        message names the setting and a value that works (the model's own tile, an overlap of 0.5).
    """
    grid = TileGrid(shape, settings.tile_zyx or card_tile, settings.overlap)
    voxels = math.prod(grid.tile)
    if voxels < min(MIN_TILE_VOXELS, math.prod(grid.shape)):
        raise UserError(
            "{tile} is too small to blend: a tile of {voxels} voxels (under {minimum}) is mostly the cost of a "
            "network call, and the network sees almost none of the context it learnt on. Set {card} (the "
            "model's training patch) or {null} to use it.",
            tile=Setting("inference.tile_zyx", _zyx(grid.tile), assignment=False),
            voxels=voxels,
            minimum=MIN_TILE_VOXELS,
            card=Setting("inference.tile_zyx", _list(card_tile), assignment=False),
            null=Setting("inference.tile_zyx", "null", assignment=False),
        )
    if grid.evaluations_per_voxel() > MAX_EVALUATIONS_PER_VOXEL:
        raise UserError(
            "{overlap} with tiles of {tile} makes the network compute every voxel {evaluations:.0f} times "
            "(at most {limit:g} is allowed). Set {working} (about 8) or larger tiles.",
            overlap=Setting("inference.overlap", f"{settings.overlap:g}", assignment=False),
            tile=_zyx(grid.tile),
            evaluations=grid.evaluations_per_voxel(),
            limit=MAX_EVALUATIONS_PER_VOXEL,
            working=Setting("inference.overlap", "0.5"),
        )
    return grid


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


def _three(values: Sequence[int], what: str, *, minimum: int) -> tuple[int, int, int]:
    """Three integers ``(z, y, x)``, each at least ``minimum``."""
    numbers = tuple(int(v) for v in values)
    if len(numbers) != 3 or any(v != w for v, w in zip(numbers, values)) or min(numbers) < minimum:
        raise ValueError(f"the {what} must be three integers (z, y, x) of at least {minimum}, got {tuple(values)}")
    return numbers  # type: ignore[return-value]


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
        Core size per axis, at least 1: a multiple of ``multiple`` (or at least the axis).
    halo
        Voxels read on each side of a core (the network's reach rounded up to its size multiple,
        :func:`fusemycell.models.receptive_field.halo`), so that every read starts on the pooling grid.
    multiple
        The network's size multiple (the product of its pooling factors) per axis.

    Raises
    ------
    ValueError
        When a size is not three positive integers (halo: non-negative), or a core shorter than its
        axis or a halo is not a multiple of ``multiple``: such a tiling would not equal the whole volume's
        prediction, so it cannot be made.
    """

    def __init__(
        self,
        shape: Sequence[int],
        core: Sequence[int],
        halo: Sequence[int],
        *,
        multiple: Sequence[int],
        planned: bool = False,
    ):
        self.shape = _three(shape, "volume shape", minimum=1)
        requested = _three(core, "tile core", minimum=1)
        self.halo = _three(halo, "halo", minimum=0)
        self.multiple = _three(multiple, "size multiple", minimum=1)
        self.core = tuple(min(c, s) for c, s in zip(requested, self.shape))
        for axis, (size, c, h, m) in enumerate(zip(self.shape, self.core, self.halo, self.multiple)):
            # a core shorter than its axis must keep every read on the pooling grid of the whole volume
            if h % m or (c < size and c % m):
                raise ValueError(
                    f"exact tiling along axis {'zyx'[axis]}: core {c} and halo {h} must be multiples of the "
                    f"network's size multiple {m} (or the core the whole axis, {size}); got core {self.core}, "
                    f"halo {self.halo}, size multiple {self.multiple}"
                )
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


def _zyx(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


def exact_grid(
    shape: Sequence[int],
    *,
    halo: Sequence[int],
    multiple: Sequence[int],
    settings: TileSettings,
    load: HostLoad | None = None,
    network_bytes_per_voxel: float = 256.0,
    device_bytes: float | None = None,
) -> HaloGrid:
    """The exact tiling of a volume of ``shape``: the given tile, or the one with fewest evaluations in memory.

    Memory counted (bytes): the network on a tile (``network_bytes_per_voxel`` per voxel read, measured
    for the model: :func:`fusemycell.inference.predictor.network_bytes_per_voxel`; on a GPU within
    ``device_bytes`` instead) and the host's buffers (:func:`host_bytes`). Their sum stays within
    :data:`PLANNED_MEMORY_SHARE` of ``settings.memory_gb``; none of it grows with the volume's depth.

    Raises
    ------
    UserError
        When ``settings.memory_gb`` is too small for tiles that compute each voxel at most
        :data:`MAX_EVALUATIONS_PER_VOXEL` times (and read at least :data:`MIN_TILE_VOXELS`): the message
        names a budget that works. A ``settings.tile_zyx`` that small (or without room for a core inside
        its halo) is set aside with a warning naming the smallest sensible tile
        (:func:`recommended_tile`), and the tiles are planned from memory: with exact tiling the tile is a
        speed setting only.
    """
    shape = tuple(int(s) for s in shape)
    load = load or HostLoad()
    if settings.tile_zyx is not None:
        tile = tuple(int(t) for t in settings.tile_zyx)
        core = [size if t >= size else (t - 2 * h) // m * m for size, t, h, m in zip(shape, tile, halo, multiple)]
        grid = HaloGrid(shape, core, halo, multiple=multiple) if min(core) >= 1 else None
        if grid is not None and _affordable(grid):
            return grid
        _warn_set_aside(tile, shape, halo, multiple, grid)

    def plan(memory_gb: float) -> HaloGrid:
        budget = memory_gb * 2**30 * PLANNED_MEMORY_SHARE

        def fits(core: tuple[int, int, int], tile: tuple[int, int, int]) -> bool:
            host, network = planned_bytes(shape, core[0], tile, load, network_bytes_per_voxel)
            if device_bytes is not None:
                return host <= budget and network <= device_bytes
            return host + network <= budget

        return HaloGrid(shape, plan_cores(shape, halo, multiple, fits), halo, multiple=multiple, planned=True)

    grid = plan(settings.memory_gb)
    if _affordable(grid):
        return grid
    raise _too_little_memory(settings.memory_gb, grid, plan, gpu=device_bytes is not None)


def _too_little_memory(memory_gb: float, grid: HaloGrid, plan: Callable[[float], HaloGrid], *, gpu: bool) -> UserError:
    """The refusal of a budget whose largest tiles cost too many evaluations, naming one that works (a power
    of two whose plan computes each voxel at most 8 times)."""
    working = next(
        (gb for gb in (2.0**k for k in range(-6, 21)) if gb > memory_gb and plan(gb).evaluations_per_voxel() <= 8),
        None,
    )
    return UserError(
        "{memory} is too little memory to tile this {shape} volume exactly: the largest tiles that fit ({tile} "
        "voxels read for cores of {core}) mean that {cost}. Set {working}{device}.",
        memory=Setting("inference.memory_gb", f"{memory_gb:g}", assignment=False),
        shape=_zyx(grid.shape),
        tile=_zyx(grid.tile),
        core=_zyx(grid.core),
        cost=_cost(grid),
        working=Setting("inference.memory_gb", f"{working:g}" if working is not None else "MORE"),
        device=" (the network's tile must also fit in half the GPU's free memory)" if gpu else "",
    )


def _warn_set_aside(
    tile: Sequence[int], shape: Sequence[int], halo: Sequence[int], multiple: Sequence[int], grid: HaloGrid | None
) -> None:
    """Say that ``inference.tile_zyx`` is set aside for exact tiling, and which tile would be used."""
    logger.warning(
        "inference.tile_zyx %s is too small for exact tiling with this model: a tile reads %s voxels of context "
        "on each side of its core, so %s. Tiles are sized from inference.memory_gb instead (the result does "
        "not depend on the tile); to set one, use %s or larger (at most 8 evaluations per voxel).",
        _zyx(tile),
        _zyx(halo),
        "it holds no core" if grid is None else _cost(grid),
        _list(recommended_tile(shape, halo, multiple)),
    )


def _affordable(grid: HaloGrid) -> bool:
    """Whether a tiling is worth running: few evaluations per voxel, tiles that are not mostly call overhead."""
    voxels = math.prod(grid.tile)
    return grid.evaluations_per_voxel() <= MAX_EVALUATIONS_PER_VOXEL and voxels >= min(
        MIN_TILE_VOXELS, math.prod(grid.shape)
    )


def _cost(grid: HaloGrid) -> str:
    evaluations = grid.evaluations_per_voxel()
    if evaluations > MAX_EVALUATIONS_PER_VOXEL:
        return (
            f"the network would compute every voxel {evaluations:.0f} times over {len(grid)} tiles "
            f"(at most {MAX_EVALUATIONS_PER_VOXEL:g} is allowed)"
        )
    return f"its tiles of {math.prod(grid.tile)} voxels are under the {MIN_TILE_VOXELS} a network call needs"


def recommended_tile(shape: Sequence[int], halo: Sequence[int], multiple: Sequence[int]) -> tuple[int, int, int]:
    """The smallest exact tile worth setting: cores of twice the halo (rounded up to the size multiple),
    so at most 2 reads per voxel along each axis (8 evaluations per voxel); the axis where that covers it."""
    tile = []
    for size, h, m in zip(shape, halo, multiple):
        core = max(int(m), int(m) * math.ceil(2 * int(h) / int(m)))
        tile.append(int(size) if core >= size else min(int(size), core + 2 * int(h)))
    return tuple(tile)  # type: ignore[return-value]


def _list(values: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"
