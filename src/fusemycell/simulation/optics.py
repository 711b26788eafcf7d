"""Image formation in a light-sheet microscope, simplified to what degrades a single view.

Axes: z is the detection axis (the objective looks down z from ``z = 0``), x is
the illumination axis (the sheet enters at ``x = 0`` and travels towards +x).
Depths are tissue path lengths in micrometres, so a concave specimen or a gap
between cells attenuates less than a straight distance would say.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def tissue_depth_um(tissue: np.ndarray, axis: int, spacing_um: float) -> np.ndarray:
    """Tissue path length from the ``index 0`` face along ``axis`` up to each voxel (micrometres).

    Counts only voxels inside the tissue, half a voxel for the voxel itself.
    """
    inside = tissue.astype(np.float32)
    return (np.cumsum(inside, axis=axis, dtype=np.float32) - 0.5 * inside) * np.float32(spacing_um)


def attenuation(depth_um: np.ndarray, length_um: float) -> np.ndarray:
    """Beer-Lambert decay ``exp(-depth / length)``."""
    return np.exp(-depth_um / np.float32(length_um)).astype(np.float32)


def gaussian_blur_um(image: np.ndarray, sigma_um: Sequence[float], spacing_zyx: Sequence[float]) -> np.ndarray:
    """Gaussian blur with widths in micrometres (z, y, x); 0 leaves an axis alone."""
    sigma_voxels = [s / d for s, d in zip(sigma_um, spacing_zyx)]
    return ndimage.gaussian_filter(image.astype(np.float32, copy=False), sigma_voxels, mode="nearest")


def depth_varying_blur(
    image: np.ndarray,
    sigma_map_um: np.ndarray,
    axes: Sequence[int],
    spacing_zyx: Sequence[float],
    levels: int,
) -> np.ndarray:
    """Blur whose width varies voxel by voxel, along the given axes.

    The image is blurred at ``levels`` widths spanning the range of
    ``sigma_map_um``; each voxel takes the linear interpolation of the two
    nearest widths. This is the usual way to render a space-variant PSF
    without a convolution per voxel.
    """
    lowest, highest = float(sigma_map_um.min()), float(sigma_map_um.max())
    if highest - lowest < 1e-6:
        sigma = [lowest if a in axes else 0.0 for a in range(3)]
        return gaussian_blur_um(image, sigma, spacing_zyx)
    widths = np.linspace(lowest, highest, levels)
    position = (sigma_map_um - lowest) / (highest - lowest) * (levels - 1)
    lower = np.clip(np.floor(position).astype(np.int32), 0, levels - 2)
    weight = (position - lower).astype(np.float32)
    result = np.zeros(image.shape, dtype=np.float32)
    for level, width in enumerate(widths):
        blurred = gaussian_blur_um(image, [width if a in axes else 0.0 for a in range(3)], spacing_zyx)
        below = lower == level
        above = lower == level - 1
        result[below] += (1 - weight[below]) * blurred[below]
        result[above] += weight[above] * blurred[above]
    return result


def camera(
    irradiance: np.ndarray,
    *,
    photons_at_unit: float,
    offset_adu: float,
    gain_adu_per_photon: float,
    read_noise_adu: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """sCMOS camera: Poisson shot noise, gain, Gaussian read noise and offset, to uint16.

    ``irradiance`` 1.0 yields ``photons_at_unit`` photons on average.
    """
    expected = np.clip(irradiance, 0, None) * np.float32(photons_at_unit)
    photons = rng.poisson(expected).astype(np.float32)
    signal = photons * np.float32(gain_adu_per_photon) + np.float32(offset_adu)
    signal += rng.normal(0.0, read_noise_adu, irradiance.shape).astype(np.float32)
    return np.clip(np.rint(signal), 0, np.iinfo(np.uint16).max).astype(np.uint16)
