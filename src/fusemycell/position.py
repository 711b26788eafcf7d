"""Where each voxel is in the specimen: the position channels of the network's input.

A 16x64x64 patch cannot know how deep in the specimen it lies, yet the single view
degrades with the tissue crossed by the light sheet (illumination axis, x) and by the
emitted light (detection axis, z). The position channels tell the network, in
micrometres:

``surface_distance``
    signed distance to the specimen's surface (positive inside, negative outside);
``depth_z``
    specimen tissue crossed along z from the first plane (the detection side) to the voxel;
``depth_x``
    specimen tissue crossed along x from the first column (the illumination side);
``context``
    the single view itself at low resolution: the block means of the whole volume smoothed
    over ``context_um`` (a Gaussian sigma of 8 um by default, against the network's receptive field
    of about 20 um). It carries what a patch cannot see: how bright the specimen is around it, so
    how much the sheet and the emitted light have been attenuated and how much haze surrounds it
    (the global, low-resolution pass of the best published entries, as an input the patch network
    is conditioned on). Normalised intensity, not divided by ``scale_um``.

They are computed once per volume from the specimen mask of the **whole** single view
(:func:`position_field`), on a coarse grid of about ``grid_um`` micrometres: one slab-by-slab
pass of block means (memory: one slab plus the coarse grid, whatever the volume's size), a
Gaussian smoothing, a threshold (Otsu's by default) and hole filling. A
:class:`PositionField` then gives the channels of any box by trilinear interpolation of the
coarse grid at the box's voxel indices, so a training patch and an inference tile of the same
place receive exactly the same values. Patch stores keep the fields of their volumes
(:mod:`fusemycell.patching.store`); inference computes the field of each input on the
network's grid; the model card carries the :class:`PositionChannels` settings, so inference
rebuilds exactly the channels the model was trained with. No Kedro import.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import Field
from scipy import ndimage

from fusemycell.configuration import StrictConfig

logger = logging.getLogger(__name__)

ChannelName = Literal["surface_distance", "depth_z", "depth_x", "context"]

CHANNEL_DESCRIPTIONS = {
    "surface_distance": "signed distance to the specimen's surface (positive inside), micrometres / scale_um",
    "depth_z": "specimen tissue crossed along z from the first plane (detection side), micrometres / scale_um",
    "depth_x": "specimen tissue crossed along x from the first column (illumination side), micrometres / scale_um",
    "context": "the normalised single view at low resolution (block means smoothed over context_um)",
}


class PositionChannels(StrictConfig):
    """Position channels of the network input (``patching.position``); the model card carries them."""

    enabled: bool = False
    """Add the channels to the single view (off, the default: the network sees the single view alone;
    benchmarks/README.md, "Quality", measures both)."""
    channels: tuple[ChannelName, ...] = ("surface_distance", "depth_z", "depth_x")
    """Which channels, in this order after the single view."""
    grid_um: float = Field(default=2.0, gt=0)
    """Coarse grid spacing, micrometres (raised when the grid would exceed ``max_grid_voxels``)."""
    smooth_um: float = Field(default=3.0, ge=0)
    """Gaussian sigma of the smoothing before thresholding, micrometres (bridges the gaps between cells)."""
    threshold: float | Literal["otsu"] = "otsu"
    """Smoothed normalised intensity that counts as specimen, or Otsu's threshold of the coarse grid."""
    scale_um: float = Field(default=50.0, gt=0)
    """The distance channels are micrometres divided by this (values of order 1 for the network)."""
    context_um: float = Field(default=8.0, ge=0)
    """Gaussian sigma of the ``context`` channel's smoothing, micrometres."""
    max_grid_voxels: int = Field(default=16_000_000, ge=1000)
    """Upper bound of the coarse grid (bounded memory on multi-GB volumes)."""

    @property
    def count(self) -> int:
        """Channels added to the single view (0 when disabled)."""
        return len(self.channels) if self.enabled else 0


def grid_blocks(
    shape_zyx: Sequence[int], spacing_zyx: Sequence[float], config: PositionChannels
) -> tuple[int, int, int]:
    """Voxels per coarse cell along each axis: about ``grid_um``, grown until the grid fits ``max_grid_voxels``."""
    grid = float(config.grid_um)
    while True:
        blocks = tuple(max(1, int(round(grid / float(s)))) for s in spacing_zyx)
        cells = math.prod(math.ceil(n / b) for n, b in zip(shape_zyx, blocks))
        if cells <= config.max_grid_voxels:
            return blocks  # type: ignore[return-value]
        grid *= 1.25


def block_means(volume: Any, blocks: Sequence[int]) -> np.ndarray:
    """Means of ``blocks``-sized cells of a ZYX array-like, read one slab of ``blocks[0]`` planes at a time.

    Partial cells at the far edges average the voxels they hold.
    """
    bz, by, bx = (int(b) for b in blocks)
    nz, ny, nx = (int(n) for n in volume.shape)
    cy, cx = math.ceil(ny / by), math.ceil(nx / bx)
    counts_y = np.minimum(by, ny - np.arange(cy) * by).astype(np.float64)
    counts_x = np.minimum(bx, nx - np.arange(cx) * bx).astype(np.float64)
    out = np.empty((math.ceil(nz / bz), cy, cx), dtype=np.float32)
    for index, z0 in enumerate(range(0, nz, bz)):
        slab = np.asarray(volume[z0 : min(nz, z0 + bz)], dtype=np.float64)
        slab = np.nan_to_num(slab, nan=0.0, posinf=0.0, neginf=0.0)
        plane = slab.sum(axis=0)
        padded = np.zeros((cy * by, cx * bx), dtype=np.float64)
        padded[:ny, :nx] = plane
        sums = padded.reshape(cy, by, cx, bx).sum(axis=(1, 3))
        out[index] = sums / (slab.shape[0] * counts_y[:, None] * counts_x[None, :])
    return out


def specimen_mask(coarse: np.ndarray, cell_um: Sequence[float], config: PositionChannels) -> np.ndarray:
    """The specimen on the coarse grid: smoothed, thresholded, holes filled."""
    smoothed = coarse.astype(np.float32)
    if config.smooth_um > 0:
        smoothed = ndimage.gaussian_filter(smoothed, [config.smooth_um / c for c in cell_um], mode="nearest")
    if config.threshold == "otsu":
        from skimage.filters import threshold_otsu

        level = float(threshold_otsu(smoothed)) if float(smoothed.max()) > float(smoothed.min()) else math.inf
    else:
        level = float(config.threshold)
    return ndimage.binary_fill_holes(smoothed > level)


def _signed_distance(mask: np.ndarray, cell_um: Sequence[float]) -> np.ndarray:
    """Distance to the surface, micrometres: positive inside, negative outside; the field of view's edge
    counts as surface for a specimen cut by it."""
    padded = np.pad(mask, 1, constant_values=False)
    inside = ndimage.distance_transform_edt(padded, sampling=cell_um)
    outside = ndimage.distance_transform_edt(~padded, sampling=cell_um) if padded.any() else np.zeros_like(inside)
    core = (slice(1, -1),) * 3
    return (inside[core] - outside[core]).astype(np.float32)


def _tissue_crossed(mask: np.ndarray, axis: int, cell_um: float) -> np.ndarray:
    """Specimen crossed along ``axis`` from index 0 to the centre of each cell, micrometres."""
    crossed = np.cumsum(mask, axis=axis, dtype=np.float32) - 0.5 * mask
    return (crossed * np.float32(cell_um)).astype(np.float32)


def _context(means: np.ndarray, cell_um: Sequence[float], sigma_um: float) -> np.ndarray:
    """The coarse grid of block means smoothed over ``sigma_um`` (the ``context`` channel)."""
    means = np.nan_to_num(means.astype(np.float32))
    if sigma_um <= 0:
        return means
    return ndimage.gaussian_filter(means, [sigma_um / c for c in cell_um], mode="nearest").astype(np.float32)


@dataclass(frozen=True)
class PositionField:
    """The position channels of one volume on its coarse grid; :meth:`region` gives them for any box."""

    coarse: np.ndarray
    """``(channels, cz, cy, cx)`` float32, the distances already divided by ``scale_um``."""
    blocks_zyx: tuple[int, int, int]
    """Voxels per coarse cell."""
    shape_zyx: tuple[int, int, int]
    """Shape of the volume (voxels)."""
    specimen_fraction: float = 0.0
    """Share of the coarse grid inside the specimen (reported)."""
    origin_zyx: tuple[int, int, int] = (0, 0, 0)
    """Added to the origins :meth:`region` is asked for: the field of a block of the volume (:meth:`block`)."""

    def block(self, origin_zyx: Sequence[int]) -> PositionField:
        """The same field, indexed from ``origin_zyx`` (for a block cut out of the volume)."""
        return replace(self, origin_zyx=tuple(int(o) + int(b) for o, b in zip(origin_zyx, self.origin_zyx)))

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.coarse.shape[0])

    def region(self, origin_zyx: Sequence[int], size_zyx: Sequence[int]) -> np.ndarray:
        """``(channels, *size_zyx)`` float32 at voxels ``origin .. origin + size``.

        Indices past the volume's end are reflected as :func:`fusemycell.patching.extract.read_patch`
        pads (so a padded patch's channels follow its padded content); the values at a voxel do not
        depend on the box it is asked with.
        """
        values = self.coarse
        origin = [int(o) + int(b) for o, b in zip(origin_zyx, self.origin_zyx)]
        for axis, (o, n, b, full) in enumerate(zip(origin, size_zyx, self.blocks_zyx, self.shape_zyx)):
            index = _padded_indices(o, int(n), int(full))
            lower, upper, weight = _interpolation(index, int(b), values.shape[axis + 1])
            take_lower = np.take(values, lower, axis=axis + 1)
            take_upper = np.take(values, upper, axis=axis + 1)
            shape = [1] * values.ndim
            shape[axis + 1] = len(weight)
            w = weight.reshape(shape)
            values = take_lower * (1 - w) + take_upper * w
        return np.ascontiguousarray(values, dtype=np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What a patch store keeps (see :meth:`from_arrays`)."""
        return {
            "coarse": self.coarse,
            "blocks_zyx": np.asarray(self.blocks_zyx, dtype=np.int64),
            "shape_zyx": np.asarray(self.shape_zyx, dtype=np.int64),
            "specimen_fraction": np.asarray(self.specimen_fraction, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PositionField:
        """The field :meth:`to_arrays` described."""
        return cls(
            coarse=np.asarray(arrays["coarse"], dtype=np.float32),
            blocks_zyx=tuple(int(v) for v in arrays["blocks_zyx"]),  # type: ignore[arg-type]
            shape_zyx=tuple(int(v) for v in arrays["shape_zyx"]),  # type: ignore[arg-type]
            specimen_fraction=float(arrays["specimen_fraction"]),
        )


def _padded_indices(origin: int, size: int, full: int) -> np.ndarray:
    """Voxel indices ``origin .. origin + size`` along an axis of ``full`` voxels, padded past its end
    exactly as :func:`fusemycell.patching.extract.read_patch` pads the box it read (NumPy's reflect of
    the part inside, or edge for a single voxel)."""
    inside = np.arange(origin, min(origin + size, full))
    missing = size - len(inside)
    if missing <= 0:
        return inside
    return np.pad(inside, (0, missing), mode="reflect" if len(inside) > 1 else "edge")


def _interpolation(index: np.ndarray, block: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper coarse cells and the weight of the upper one, for voxel indices along an axis."""
    position = (index.astype(np.float64) - (block - 1) / 2.0) / block
    lower = np.clip(np.floor(position).astype(np.int64), 0, cells - 1)
    upper = np.minimum(lower + 1, cells - 1)
    weight = np.clip(position - lower, 0.0, 1.0).astype(np.float32)
    return lower, upper, weight


def position_field(
    volume: Any, spacing_zyx: Sequence[float], config: PositionChannels, *, name: str = ""
) -> PositionField:
    """The position field of a normalised single view (a ZYX array-like read in slabs).

    Raises
    ------
    ValueError
        When the channels are disabled (there is no field to compute).
    """
    if not config.enabled:
        raise ValueError("position channels are disabled (patching.position.enabled: false)")
    shape = tuple(int(n) for n in volume.shape)
    blocks = grid_blocks(shape, spacing_zyx, config)
    cell_um = [float(b) * float(s) for b, s in zip(blocks, spacing_zyx)]
    means = block_means(volume, blocks)
    mask = specimen_mask(means, cell_um, config)
    if not mask.any():
        logger.warning(
            "%s: no specimen found for the position channels; they are the field of view's", name or "volume"
        )
        mask = np.ones_like(mask)
    scale = np.float32(config.scale_um)
    builders = {
        "surface_distance": lambda: _signed_distance(mask, cell_um) / scale,
        "depth_z": lambda: _tissue_crossed(mask, 0, cell_um[0]) / scale,
        "depth_x": lambda: _tissue_crossed(mask, 2, cell_um[2]) / scale,
        "context": lambda: _context(means, cell_um, config.context_um),
    }
    coarse = np.stack([builders[c]() for c in config.channels])
    return PositionField(
        coarse.astype(np.float32),
        blocks,
        shape,
        specimen_fraction=float(mask.mean()),  # type: ignore[arg-type]
    )
