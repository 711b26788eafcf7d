"""Intensity normalisation exactly as the Fuse My Cells challenge does it.

The challenge normalises every image on its own: ``(x - p2) / (p99.8 - p2)``
with NumPy's (linear) percentiles, **no clipping**, and returns a constant
image unchanged. :class:`IntensityHistogram` computes those percentiles exactly
for integer volumes while reading them slab by slab, so a 2 GB volume never has
to be in memory to be normalised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Percentiles of the challenge's normalisation.
CHALLENGE_PERCENTILES = (2.0, 99.8)

# voxels counted at once by the dense histogram (its 64-bit temporary stays at 32 MiB)
_HISTOGRAM_CHUNK = 1 << 22

# integer types whose full value range fits a dense histogram (at most 2**16 bins)
_HISTOGRAM_DTYPES = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16)}


@dataclass(frozen=True)
class NormalizationStats:
    """What maps a volume to the network's scale and back."""

    low: float
    """Intensity at the low percentile (maps to 0)."""
    high: float
    """Intensity at the high percentile (maps to 1)."""
    p_low: float = CHALLENGE_PERCENTILES[0]
    """Low percentile used."""
    p_high: float = CHALLENGE_PERCENTILES[1]
    """High percentile used."""

    @property
    def is_constant(self) -> bool:
        """True when the percentiles coincide: the image is left unchanged."""
        return self.low == self.high

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for tables and JSON."""
        return asdict(self)


#: Voxels normalised at once: a large block is done in chunks of planes, so its temporaries stay small.
NORMALIZE_CHUNK_VOXELS = 1 << 22


def normalize(data: np.ndarray, stats: NormalizationStats, dtype: Any = np.float32) -> np.ndarray:
    """Apply :class:`NormalizationStats` (no clipping; constant images unchanged).

    Computed in float32 (float64 when ``dtype`` is float64), chunk by chunk of the first axis: a
    block costs its result plus a chunk, not three temporary copies of itself.
    """
    data = np.asarray(data)
    compute = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    if data.ndim < 2 or data.size <= NORMALIZE_CHUNK_VOXELS:
        return _normalize_chunk(data, stats, compute).astype(dtype, copy=False)
    out = np.empty(data.shape, dtype=dtype)
    step = max(1, NORMALIZE_CHUNK_VOXELS // int(np.prod(data.shape[1:])))
    for first in range(0, data.shape[0], step):
        out[first : first + step] = _normalize_chunk(data[first : first + step], stats, compute)
    return out


def _normalize_chunk(data: np.ndarray, stats: NormalizationStats, compute: Any) -> np.ndarray:
    data = np.asarray(data, dtype=compute)
    if stats.is_constant:
        return data
    return (data - stats.low) / (stats.high - stats.low)


class IntensityHistogram:
    """Exact intensity statistics of a volume accumulated slab by slab.

    For 8- and 16-bit integer volumes (the challenge's uint16) a dense
    histogram gives percentiles identical to ``np.percentile`` on the whole
    volume. Other types (floats, 32-bit integers) keep their finite values and
    compute the same percentiles at the end: exact, but memory grows with the
    volume, which is why raw data should stay 16-bit.
    """

    def __init__(self, dtype: Any):
        self.dtype = np.dtype(dtype)
        self.exact_histogram = self.dtype in _HISTOGRAM_DTYPES
        self._offset = int(np.iinfo(self.dtype).min) if self.exact_histogram else 0
        size = int(np.iinfo(self.dtype).max) - self._offset + 1 if self.exact_histogram else 0
        self.counts = np.zeros(size, dtype=np.int64)
        self._values: list[np.ndarray] = []
        self.count = 0
        self.nonfinite = 0
        self._sum = 0.0

    def add(self, slab: np.ndarray) -> None:
        """Accumulate the voxels of ``slab``."""
        values = np.asarray(slab).ravel()
        if self.exact_histogram:
            # bincount converts to 64-bit integers: count in chunks so that copy stays small
            for start in range(0, values.size, _HISTOGRAM_CHUNK):
                chunk = values[start : start + _HISTOGRAM_CHUNK]
                shifted = chunk if self._offset == 0 else chunk.astype(np.int32) - self._offset
                self.counts += np.bincount(shifted, minlength=self.counts.size)
            self._sum += float(values.sum(dtype=np.float64))
            self.count += values.size
            return
        finite = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
        self.nonfinite += int(values.size - finite.sum())
        kept = values[finite]
        self._values.append(kept.copy())
        self._sum += float(kept.sum(dtype=np.float64))
        self.count += kept.size

    @property
    def mean(self) -> float:
        """Mean of the finite voxels."""
        return self._sum / self.count if self.count else float("nan")

    def percentiles(self, qs: Sequence[float]) -> list[float]:
        """Percentiles with NumPy's default (linear) method over all finite voxels."""
        if self.count == 0:
            return [float("nan")] * len(qs)
        if not self.exact_histogram:
            return [float(v) for v in np.percentile(np.concatenate(self._values), list(qs))]
        cumulative = np.cumsum(self.counts)
        results = []
        for q in qs:
            position = (self.count - 1) * float(q) / 100.0
            below = int(np.floor(position))
            fraction = position - below
            lower = self._order_statistic(cumulative, below)
            upper = self._order_statistic(cumulative, min(below + 1, self.count - 1))
            results.append(float(lower + fraction * (upper - lower)))
        return results

    def _order_statistic(self, cumulative: np.ndarray, rank: int) -> int:
        return int(np.searchsorted(cumulative, rank, side="right")) + self._offset

    @property
    def minimum(self) -> float:
        """Smallest finite voxel."""
        return self.percentiles([0.0])[0]

    @property
    def maximum(self) -> float:
        """Largest finite voxel."""
        return self.percentiles([100.0])[0]

    def otsu_threshold(self) -> float:
        """Otsu's threshold between background and specimen (on the histogram, no second pass)."""
        if self.count == 0:
            return float("nan")
        if self.exact_histogram:
            nonzero = np.nonzero(self.counts)[0]
            if nonzero.size < 2:
                return float(nonzero[0] + self._offset) if nonzero.size else float("nan")
            counts = self.counts[nonzero[0] : nonzero[-1] + 1].astype(np.float64)
            centres = np.arange(nonzero[0], nonzero[-1] + 1, dtype=np.float64) + self._offset
        else:
            counts, edges = np.histogram(np.concatenate(self._values), bins=4096)
            counts = counts.astype(np.float64)
            centres = (edges[:-1] + edges[1:]) / 2
        weight_low = np.cumsum(counts)
        weight_high = weight_low[-1] - weight_low
        mass_low = np.cumsum(counts * centres)
        mean_low = mass_low / np.maximum(weight_low, 1e-12)
        mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1e-12)
        between = weight_low * weight_high * (mean_low - mean_high) ** 2
        return float(centres[int(np.argmax(between[:-1]))]) if counts.size > 1 else float(centres[0])

    def fraction_above(self, threshold: float) -> float:
        """Share of finite voxels strictly above ``threshold``."""
        if self.count == 0:
            return float("nan")
        if self.exact_histogram:
            start = int(np.floor(threshold)) + 1 - self._offset
            return float(self.counts[max(start, 0) :].sum() / self.count)
        return float(sum((v > threshold).sum() for v in self._values) / self.count)
