"""The challenge's public baselines, as lazily computed volumes."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

#: The public Gaussian-blur baseline's sigma, in voxels, per channel.
BLUR_SIGMA_VOXELS = {"nucleus": 0.442, "membrane": 0.5}


class GaussianBlurred:
    """Array-like 3D Gaussian blur of ``source`` (sigma in voxels), computed box by box.

    Any box is read with a halo of the filter's radius, so the result equals
    ``scipy.ndimage.gaussian_filter(source, sigma, mode="reflect")`` on the whole
    volume, without ever holding it.
    """

    def __init__(self, source: Any, sigma: float, truncate: float = 4.0):
        self.source = source
        self.sigma = float(sigma)
        self.truncate = truncate
        self.radius = int(truncate * self.sigma + 0.5)
        self.shape = tuple(source.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        squeeze = [isinstance(k, (int, np.integer)) for k in key]
        bounds = []
        for k, n in zip(key, self.shape):
            if isinstance(k, (int, np.integer)):
                start = int(k) % n
                bounds.append((start, start + 1))
            else:
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("GaussianBlurred supports unit-step slices and integers")
                bounds.append((start, stop))
        outer = [(max(0, a - self.radius), min(n, b + self.radius)) for (a, b), n in zip(bounds, self.shape)]
        block = np.asarray(self.source[tuple(slice(a, b) for a, b in outer)], dtype=np.float32)
        blurred = (
            gaussian_filter(block, self.sigma, mode="reflect", truncate=self.truncate) if self.sigma > 0 else block
        )
        inner = tuple(slice(a - oa, b - oa) for (a, b), (oa, _) in zip(bounds, outer))
        result = blurred[inner]
        axes = tuple(i for i, s in enumerate(squeeze) if s)
        return result.squeeze(axis=axes) if axes else result


def blur_sigma(channel: str, overrides: dict[str, float] | None = None) -> float:
    """The baseline's sigma for a channel (configurable, public defaults otherwise)."""
    values = {**BLUR_SIGMA_VOXELS, **(overrides or {})}
    if channel not in values:
        raise ValueError(f"no blur sigma for channel {channel!r}; known: {sorted(values)}")
    return float(values[channel])
