"""Linear resampling to a target voxel size, one axis at a time, slab-friendly.

Voxel centres are aligned: output voxel ``o`` of ``n_out`` samples the input at
``(o + 0.5) * n_in / n_out - 0.5``, clamped to the volume. Resampling back to the
original number of voxels is the inverse used at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def resampled_shape(
    shape: Sequence[int], spacing_zyx: Sequence[float], target_spacing_zyx: Sequence[float]
) -> tuple[int, int, int]:
    """Number of voxels per axis covering the same field of view at the target voxel size."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing_zyx, target_spacing_zyx))  # type: ignore[return-value]


def linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two input indices and the weight of the second."""
    position = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    position = np.clip(position, 0, n_in - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, n_in - 1)
    return lower, upper, (position - lower).astype(np.float32)


def resample_axis(
    array: np.ndarray,
    axis: int,
    n_out: int,
    output_indices: np.ndarray | None = None,
    *,
    n_in: int | None = None,
    offset: int = 0,
) -> np.ndarray:
    """Linear interpolation of ``array`` along ``axis`` to ``n_out`` samples.

    ``output_indices`` selects which output samples to compute (all by default).
    When ``array`` holds only input samples ``[offset, offset + len)`` of an axis
    of ``n_in`` samples, pass both: a slab of the output is then made from the
    input planes it needs (see :func:`source_planes`).
    """
    n_in = array.shape[axis] if n_in is None else n_in
    if n_in == n_out and output_indices is None and offset == 0:
        return array
    lower, upper, weight = linear_weights(n_in, n_out)
    if output_indices is not None:
        lower, upper, weight = lower[output_indices], upper[output_indices], weight[output_indices]
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return np.take(array, lower - offset, axis=axis) * (1 - weight) + np.take(array, upper - offset, axis=axis) * weight


def source_planes(n_in: int, n_out: int, output_indices: np.ndarray) -> tuple[int, int]:
    """Input z range ``[start, stop)`` needed to compute the given output planes."""
    lower, upper, _ = linear_weights(n_in, n_out)
    return int(lower[output_indices].min()), int(upper[output_indices].max()) + 1


#: nnU-Net's threshold: a target whose largest voxel size is over this many times its smallest is anisotropic.
ANISOTROPY_RATIO = 3.0
#: nnU-Net's percentile of the coarse axis's voxel sizes on anisotropic data (finer than the median).
COARSE_AXIS_PERCENTILE = 10.0


def target_spacing(spacings_zyx: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """The voxel size to train on, from the training volumes' voxel sizes (nnU-Net's rule).

    The median voxel size per axis; when that target is anisotropic (its coarsest axis over
    :data:`ANISOTROPY_RATIO` times its finest, as light-sheet z planes are), the coarse axis takes
    the 10th percentile of its voxel sizes (the lower of two neighbours: a voxel size the data
    has) instead of the median: thick-plane volumes are
    interpolated up to the thinner planes that most of the data has, rather than every volume
    being blurred down to the thick planes (which would discard the axial detail the fused view
    has). Volumes already on the target are left as they are.

    Raises
    ------
    ValueError
        With no voxel size to choose from, or a voxel size that is not a positive number.
    """
    spacings = np.asarray(spacings_zyx, dtype=np.float64).reshape(-1, 3)
    if not len(spacings) or not np.all(np.isfinite(spacings)) or np.any(spacings <= 0):
        raise ValueError(f"no usable voxel size to choose a target from: {spacings.tolist()}")
    target = np.median(spacings, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY_RATIO * target.min():
        # a voxel size the data has (not one interpolated between two studies): those planes stay as acquired
        target[coarse] = np.percentile(spacings[:, coarse], COARSE_AXIS_PERCENTILE, method="lower")
    return tuple(float(round(t, 6)) for t in target)  # type: ignore[return-value]
