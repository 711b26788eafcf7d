"""Signal-focused patch sampling.

The fused target is reduced, slab by slab, to a coarse grid of block maxima
(a max filter at block resolution); blocks above a threshold are foreground.
Patch centres are drawn uniformly over foreground voxels (a random foreground
block, then a random voxel in it), plus a share of uniformly random patches so
the network also sees background. The number of patches of a volume grows with
its foreground volume, between a minimum and a cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ForegroundGrid:
    """Block maxima of a volume, and which blocks count as foreground."""

    block_zyx: tuple[int, int, int]
    maxima: np.ndarray
    threshold: float

    @property
    def mask(self) -> np.ndarray:
        """Foreground blocks."""
        return self.maxima > self.threshold

    def foreground_voxels(self, shape: Sequence[int]) -> int:
        """Voxels in foreground blocks (edge blocks counted by their real size)."""
        total = 0
        for index in np.argwhere(self.mask):
            sizes = [min(b, n - i * b) for i, b, n in zip(index, self.block_zyx, shape)]
            total += int(np.prod(sizes))
        return total


def foreground_grid(volume, block_zyx: Sequence[int], threshold: float, slab_depth: int = 16) -> ForegroundGrid:
    """Block maxima of ``volume`` (array-like, read ``slab_depth`` planes at a time, rounded to whole blocks).

    Each slab is reduced axis by axis with ``np.maximum.reduceat`` (ragged edge
    blocks included, no padded copy), and released before the next is read, so
    memory is about one slab.
    """
    block = tuple(max(1, int(b)) for b in block_zyx)
    depth, height, width = volume.shape
    grid_shape = tuple(-(-n // b) for n, b in zip((depth, height, width), block))
    maxima = np.full(grid_shape, -np.inf, dtype=np.float32)
    planes = max(block[0], (slab_depth // block[0]) * block[0])
    for z0 in range(0, depth, planes):
        slab = np.asarray(volume[z0 : z0 + planes], dtype=np.float32)
        invalid = ~np.isfinite(slab)
        if invalid.any():
            slab[invalid] = -np.inf  # a NaN must not win a maximum
        del invalid
        reduced = slab
        for axis, size in zip((2, 1, 0), (block[2], block[1], block[0])):
            reduced = np.maximum.reduceat(reduced, np.arange(0, reduced.shape[axis], size), axis=axis)
        del slab
        first = z0 // block[0]
        maxima[first : first + reduced.shape[0]] = reduced
    return ForegroundGrid(block_zyx=block, maxima=maxima, threshold=float(threshold))


def patch_count(foreground_voxels: int, per_megavoxel: float, minimum: int, maximum: int) -> int:
    """Patches for a volume: proportional to its foreground, between ``minimum`` and ``maximum``."""
    return int(np.clip(round(foreground_voxels / 1e6 * per_megavoxel), minimum, maximum))


def sample_origins(
    shape: Sequence[int],
    patch_size: Sequence[int],
    grid: ForegroundGrid,
    *,
    count: int,
    background_fraction: float,
    rng: np.random.Generator,
) -> list[tuple[tuple[int, int, int], str]]:
    """Draw ``count`` patch origins, each with how it was drawn (``"foreground"`` or ``"uniform"``).

    Origins keep the patch inside the volume; along an axis shorter than the
    patch the origin is 0 and the patch is padded when it is cut.
    """
    shape = np.asarray(shape)
    patch = np.asarray(patch_size)
    highest = np.maximum(shape - patch, 0)
    foreground_blocks = np.argwhere(grid.mask)
    n_uniform = count if len(foreground_blocks) == 0 else int(round(background_fraction * count))
    origins: list[tuple[tuple[int, int, int], str]] = []
    block = np.asarray(grid.block_zyx)
    for _ in range(count - n_uniform):
        chosen = foreground_blocks[rng.integers(len(foreground_blocks))]
        low = chosen * block
        high = np.minimum(low + block, shape)
        centre = rng.integers(low, high)
        origin = np.clip(centre - patch // 2, 0, highest)
        origins.append((tuple(int(v) for v in origin), "foreground"))
    for _ in range(n_uniform):
        origin = rng.integers(0, highest + 1)
        origins.append((tuple(int(v) for v in origin), "uniform"))
    return origins
