"""Crop to the specimen: its bounding box from the fingerprint's intensity profiles, plus a margin.

Replaces a hand-picked ``--z-range``: the box is found per pair, stored with the
preprocessed volumes, and used at inference to put predictions back in the
full field of view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def full_box(shape: Sequence[int]) -> Box:
    """The box covering the whole volume."""
    return tuple((0, int(n)) for n in shape)  # type: ignore[return-value]


def box_shape(box: Box) -> tuple[int, int, int]:
    """Size of a box along z, y, x."""
    return tuple(end - start for start, end in box)  # type: ignore[return-value]


def _relative_profile(profile: Sequence[float]) -> np.ndarray:
    values = np.asarray(profile, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    return np.ones_like(values) if high <= low else (values - low) / (high - low)


def specimen_box(
    profiles: Sequence[Sequence[Sequence[float]]],
    spacing_zyx: Sequence[float],
    *,
    threshold: float = 0.05,
    margin_um: float = 4.0,
) -> Box:
    """Bounding box of the specimen along each axis.

    Parameters
    ----------
    profiles
        One ``(profile_z, profile_y, profile_x)`` triple of mean intensities per
        image of the pair (angle and fused); a plane belongs to the specimen if
        any image's profile is above ``threshold`` between its minimum (0) and
        maximum (1).
    spacing_zyx
        Voxel size, to turn ``margin_um`` into voxels per axis.
    threshold, margin_um
        Profile level and margin.
    """
    box = []
    for axis in range(3):
        combined = np.max([_relative_profile(image[axis]) for image in profiles], axis=0)
        size = combined.size
        inside = np.nonzero(combined > threshold)[0]
        if inside.size == 0:
            box.append((0, size))
            continue
        margin = int(np.ceil(margin_um / spacing_zyx[axis]))
        box.append((max(0, int(inside[0]) - margin), min(size, int(inside[-1]) + 1 + margin)))
    return tuple(box)  # type: ignore[return-value]
