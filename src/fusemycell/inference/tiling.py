"""Sliding-window tiling: where tiles go, and how overlapping predictions are blended.

Following nnU-Net: tiles overlap by ``overlap`` of their size, their starts are
spread so the last tile is flush with the volume's edge, and predictions are
blended with a Gaussian importance map (``sigma = tile / 8``) whose minimum is
lifted above zero so every voxel has weight. The map is separable, so the sum of
weights at a voxel is the product of three 1D sums: the blending normalizer
needs no volume-sized weight array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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
