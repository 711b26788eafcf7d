"""The challenge's SSIM and N_SSIM, exact and in bounded memory.

The challenge normalises each image with its own percentiles (2, 99.8; no
clipping; a constant image unchanged), then computes scikit-image's
``structural_similarity`` (7-voxel uniform window, sample covariance,
``data_range`` the larger of the two normalised images' ranges, reflective
filtering, a 3-voxel border cropped before the mean).

:func:`ssim` gives the same number (to about 1e-9) without holding either volume:
the interior is cut into blocks, each block is read with a 3-voxel halo,
filtered in float64 and its SSIM map summed. Blocks run on a thread pool
(SciPy's filters release the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import uniform_filter

from fusemycell.normalization import CHALLENGE_PERCENTILES, IntensityHistogram

WINDOW = 7
HALO = WINDOW // 2
K1, K2 = 0.01, 0.03


@dataclass(frozen=True)
class ImageStatistics:
    """The two percentiles and the extremes of an image: what its normalisation needs."""

    low: float
    high: float
    minimum: float
    maximum: float
    otsu: float = float("nan")
    """Otsu's threshold on the raw intensities (for segmentation)."""

    @property
    def constant(self) -> bool:
        """The challenge returns a constant image unchanged."""
        return self.low == self.high

    def normalize(self, block: np.ndarray) -> np.ndarray:
        """The challenge's percentile normalisation of a block, in float64."""
        block = np.asarray(block, dtype=np.float64)
        return block if self.constant else (block - self.low) / (self.high - self.low)

    @property
    def normalized_range(self) -> float:
        """``max - min`` after normalisation."""
        span = self.maximum - self.minimum
        return span if self.constant else span / (self.high - self.low)


def image_statistics(
    volume: Any, slab_depth: int = 16, percentiles: Sequence[float] = CHALLENGE_PERCENTILES
) -> ImageStatistics:
    """Percentiles (exact) and extremes of an array-like, read slab by slab."""
    histogram = IntensityHistogram(np.dtype(volume.dtype))
    for z0 in range(0, volume.shape[0], slab_depth):
        histogram.add(np.asarray(volume[z0 : z0 + slab_depth]))
    low, high, minimum, maximum = histogram.percentiles([percentiles[0], percentiles[1], 0, 100])
    return ImageStatistics(low=low, high=high, minimum=minimum, maximum=maximum, otsu=histogram.otsu_threshold())


def _blocks(shape: Sequence[int], block: Sequence[int]) -> Iterator[tuple[slice, slice, slice]]:
    """Interior blocks (the voxels the challenge averages over), covering it exactly once."""
    ranges = [range(HALO, n - HALO, b) for n, b in zip(shape, block)]
    for z in ranges[0]:
        for y in ranges[1]:
            for x in ranges[2]:
                yield tuple(slice(start, min(start + b, n - HALO)) for start, b, n in zip((z, y, x), block, shape))  # type: ignore[misc]


def _block_ssim_sum(
    prediction: Any,
    target: Any,
    interior: tuple[slice, slice, slice],
    stats: tuple[ImageStatistics, ImageStatistics],
    data_range: float,
) -> float:
    """Sum of the SSIM map over one interior block (read with its halo)."""
    halo_box = tuple(slice(s.start - HALO, s.stop + HALO) for s in interior)
    a = stats[0].normalize(prediction[halo_box])
    b = stats[1].normalize(target[halo_box])
    count = WINDOW**3
    covariance_norm = count / (count - 1)
    mean_a = uniform_filter(a, WINDOW, mode="reflect")
    mean_b = uniform_filter(b, WINDOW, mode="reflect")
    var_a = covariance_norm * (uniform_filter(a * a, WINDOW, mode="reflect") - mean_a * mean_a)
    var_b = covariance_norm * (uniform_filter(b * b, WINDOW, mode="reflect") - mean_b * mean_b)
    cov = covariance_norm * (uniform_filter(a * b, WINDOW, mode="reflect") - mean_a * mean_b)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    crop = tuple(slice(HALO, -HALO) for _ in range(3))
    numerator = (2 * mean_a[crop] * mean_b[crop] + c1) * (2 * cov[crop] + c2)
    denominator = (mean_a[crop] ** 2 + mean_b[crop] ** 2 + c1) * (var_a[crop] + var_b[crop] + c2)
    return float(np.sum(numerator / denominator, dtype=np.float64))


def ssim(
    prediction: Any,
    target: Any,
    *,
    block: Sequence[int] = (16, 256, 256),
    workers: int | None = None,
    statistics: tuple[ImageStatistics, ImageStatistics] | None = None,
) -> float:
    """The challenge's SSIM between two volumes (array-likes, e.g. lazily read files).

    Parameters
    ----------
    prediction, target
        ``(z, y, x)`` array-likes of the same shape, at least 7 voxels per axis.
    block
        Interior block size; memory is about 12 float64 copies of a block with its halo.
    workers
        Threads; default every core.
    statistics
        Precomputed :func:`image_statistics` of both (saves a pass over each file).
    """
    shape = tuple(prediction.shape)
    if shape != tuple(target.shape):
        raise ValueError(f"SSIM needs volumes of one shape, got {shape} and {tuple(target.shape)}")
    if min(shape) < WINDOW:
        raise ValueError(f"SSIM needs at least {WINDOW} voxels per axis, got shape {shape}")
    stats = statistics or (image_statistics(prediction), image_statistics(target))
    data_range = max(stats[0].normalized_range, stats[1].normalized_range)
    interior_voxels = int(np.prod([n - 2 * HALO for n in shape]))
    blocks = list(_blocks(shape, block))
    workers = workers or min(len(blocks), os.cpu_count() or 1)
    if workers <= 1:
        total = sum(_block_ssim_sum(prediction, target, b, stats, data_range) for b in blocks)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            total = sum(pool.map(lambda b: _block_ssim_sum(prediction, target, b, stats, data_range), blocks))
    return total / interior_voxels


def normalized_ssim(ssim_prediction: float, ssim_input: float) -> float:
    """``N_SSIM = (SSIM(pred, gt) - SSIM(input, gt)) / (1 - SSIM(input, gt))``: 0 for the input itself."""
    return (ssim_prediction - ssim_input) / (1 - ssim_input)
