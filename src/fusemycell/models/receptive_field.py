"""How far the U-Net looks: the receptive field of :class:`~fusemycell.models.unet.UNet3D`, per axis.

The field is computed from the configuration alone by following, along one axis, which input
positions every feature position depends on, layer by layer, exactly as the network is built:
3x3x3 convolutions, max pooling, trilinear or transposed upsampling, skip concatenations and
the residual base's Gaussian blur. The result is the reach of an output voxel, the largest
distance (in input voxels) to an input voxel that can change it. A tile read with a halo of
at least that reach, and whose origin is aligned to the network's size multiple, predicts its
core exactly as the whole volume would (:mod:`fusemycell.inference.tiling`).
"""

from __future__ import annotations

import math

import numpy as np

from fusemycell.models.config import UNetConfig


def gaussian_radius(sigma: float) -> int:
    """Half-width of the project's Gaussian kernel (:func:`fusemycell.models.unet.gaussian_kernel`): 4 sigma
    rounded (SciPy's truncation), at least one voxel; 0 for sigma 0 (the kernel is then the identity)."""
    return max(1, int(4 * sigma + 0.5)) if sigma > 0 else 0


def _conv3(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3-wide convolution with zero padding: each position also depends on its two neighbours."""
    lo_out = np.minimum(lo, np.concatenate([lo[:1], lo[:-1]]))
    hi_out = np.maximum(hi, np.concatenate([hi[1:], hi[-1:]]))
    return lo_out, hi_out


def _pool(lo: np.ndarray, hi: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Max pooling with kernel = stride = ``factor``."""
    if factor == 1:
        return lo, hi
    cells = len(lo) // factor
    return lo[: cells * factor].reshape(cells, factor).min(1), hi[: cells * factor].reshape(cells, factor).max(1)


def _upsample(lo: np.ndarray, hi: np.ndarray, factor: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Back to the finer grid: linear interpolation (``align_corners=False``) or a transposed convolution."""
    if factor == 1:
        return lo, hi
    coarse = len(lo)
    fine = np.arange(coarse * factor)
    if mode == "transposed":  # kernel = stride: each fine position comes from one coarse position
        return lo[fine // factor], hi[fine // factor]
    source = np.maximum((fine + 0.5) / factor - 0.5, 0.0)  # PyTorch clamps the source index at 0
    first = np.floor(source).astype(int)
    second = np.minimum(first + 1, coarse - 1)
    return np.minimum(lo[first], lo[second]), np.maximum(hi[first], hi[second])


def _reach_1d(config: UNetConfig, factors: list[int], length: int) -> int:
    """The reach along one axis, measured on a 1D line of ``length`` input positions."""
    positions = np.arange(length)
    lo, hi = positions.copy(), positions.copy()

    def block(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(config.convs_per_level):
            lo, hi = _conv3(lo, hi)
        return lo, hi

    skips = []
    for level in range(config.depth):
        lo, hi = block(lo, hi)
        if level < config.depth - 1:
            skips.append((lo, hi))
            lo, hi = _pool(lo, hi, factors[level])
    for level in reversed(range(config.depth - 1)):
        lo, hi = _upsample(lo, hi, factors[level], config.upsampling)
        if config.upsampling != "transposed":
            lo, hi = _conv3(lo, hi)
        skip_lo, skip_hi = skips.pop()
        lo, hi = block(np.minimum(lo, skip_lo), np.maximum(hi, skip_hi))
    if config.has_residual and config.residual_blur_sigma > 0:
        radius = gaussian_radius(config.residual_blur_sigma)
        lo, hi = np.minimum(lo, positions - radius), np.maximum(hi, positions + radius)
    # positions near the line's ends see a clipped field; the interior holds the true reach
    interior = slice(length // 4, length - length // 4)
    return int(max((positions - lo)[interior].max(), (hi - positions)[interior].max()))


def receptive_reach(config: UNetConfig) -> tuple[int, int, int]:
    """The reach ``(z, y, x)`` in voxels: no input voxel farther than this from an output voxel changes it."""
    reach = []
    for axis in range(3):
        factors = [kernel[axis] for kernel in config.pooling]
        multiple = config.size_multiple[axis]
        # a generous bound of the reach: every layer at its coarsest stride
        bound = (2 * config.convs_per_level + 4) * config.depth * multiple + 8
        length = multiple * math.ceil(8 * bound / multiple)
        reach.append(_reach_1d(config, factors, length))
    return reach[0], reach[1], reach[2]


def receptive_field(config: UNetConfig) -> tuple[int, int, int]:
    """The receptive field ``(z, y, x)``: ``2 * reach + 1`` voxels per axis."""
    return tuple(2 * r + 1 for r in receptive_reach(config))  # type: ignore[return-value]


def halo(config: UNetConfig) -> tuple[int, int, int]:
    """The margin read around a tile's core: the reach rounded up to the network's size multiple.

    A multiple keeps every tile's origin on the pooling grid of the whole volume.
    """
    return tuple(  # type: ignore[return-value]
        m * math.ceil(r / m) for r, m in zip(receptive_reach(config), config.size_multiple)
    )
