"""A volume's noise, from a few of its planes: what the fingerprint records and an input is checked on.

Estimator: the median absolute deviation (MAD) of the differences between neighbouring voxels along
x, ``1.4826 * MAD / sqrt(2)`` (the difference of two independent noisy voxels has twice the
variance), the median over :data:`MEASURED_PLANES` evenly spaced planes. Why this one: a light-sheet
volume is mostly background and smooth specimen, so most neighbour differences are noise alone and
the MAD ignores the few edges; it is one pass of NumPy over planes already in memory (no wavelet
package, unlike skimage's ``estimate_sigma``, which is the same MAD on a finer wavelet band); and it
stays within a plane, since planes 1-3 um apart differ by signal, not only noise. No Kedro import.
"""

from __future__ import annotations

import math

import numpy as np

#: z-planes, evenly spaced, on which the noise (and an input's percentiles) are measured.
MEASURED_PLANES = 8
#: MAD of a normal distribution's samples over its standard deviation.
_MAD_TO_SIGMA = 1.4826


def plane_indices(depth: int, count: int = MEASURED_PLANES) -> list[int]:
    """``count`` z-planes evenly spaced over ``depth`` (all of them for a shorter volume)."""
    if depth <= count:
        return list(range(depth))
    return sorted({int(round(i)) for i in np.linspace(0, depth - 1, count)})


def plane_noise(plane: np.ndarray) -> float | None:
    """The noise standard deviation of one plane (y, x), in its own grey levels; None under 2 columns."""
    if plane.shape[-1] < 2:
        return None
    values = np.asarray(plane, dtype=np.float32)
    values = np.where(np.isfinite(values), values, 0.0)
    differences = np.diff(values, axis=-1).ravel()
    deviation = np.abs(differences - np.median(differences))
    return _MAD_TO_SIGMA * float(np.median(deviation)) / math.sqrt(2.0)


def noise_sigma(planes: np.ndarray) -> float | None:
    """The median of :func:`plane_noise` over ``planes`` (z, y, x); None when no plane can tell."""
    sigmas = [s for s in (plane_noise(p) for p in planes) if s is not None]
    return float(np.median(sigmas)) if sigmas else None
