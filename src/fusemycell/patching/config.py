"""Typed, validated parameters of the patching pipeline (``params:patching``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from fusemycell.configuration import StrictConfig
from fusemycell.position import PositionChannels


class ForegroundParams(StrictConfig):
    """Where the specimen is, from the fused target (normalised)."""

    threshold: float = Field(default=0.2, gt=0)
    """A block is foreground when its maximum exceeds this fraction of the fused 99.9th percentile."""
    block_zyx: tuple[int, int, int] | None = None
    """Block of the max filter, voxels; null = half the patch size."""


class AugmentationParams(StrictConfig):
    """On-the-fly augmentation of training patches; input and target always transformed together."""

    flip_xy: bool = True
    """Random flips along y and x."""
    rotate_xy: bool = True
    """Random 90-degree rotations in the xy plane (180 only, when the patch is not square)."""
    flip_z: bool = False
    """Random flip along z (off by default: the single view degrades with depth along z)."""
    intensity_scale: tuple[float, float] | None = (0.9, 1.1)
    """Random factor applied to input and target alike; null = off."""


class PatchingConfig(StrictConfig):
    """Everything the patching pipeline and the training dataset need."""

    patch_size_zyx: tuple[int, int, int] | Literal["auto"] = "auto"
    """Patch size in voxels, or ``auto``: about isotropic in micrometres within ``patch_budget_voxels``."""
    patch_budget_voxels: int = Field(default=32 * 64 * 64, ge=512)
    """Voxels per patch for ``auto``."""
    foreground: ForegroundParams = ForegroundParams()
    background_fraction: float = Field(default=0.25, ge=0, le=1)
    """Share of patches placed uniformly at random, so background is learned too."""
    patches_per_megavoxel: float = Field(default=100.0, gt=0)
    """Patches per million foreground voxels of a volume."""
    min_patches_per_volume: int = Field(default=4, ge=1)
    """At least this many patches from every volume."""
    max_patches_per_volume: int = Field(default=256, ge=1)
    """Cap, so one huge volume does not dominate."""
    store_dtype: Literal["float16", "float32"] = "float16"
    """Type of the patches on disk (normalised intensities fit float16)."""
    slab_depth: int = Field(default=16, ge=1)
    """z-planes read at a time while finding the foreground."""
    seed: int = 2025
    """Seed of the sampling."""
    augmentation: AugmentationParams = AugmentationParams()
    position: PositionChannels = PositionChannels()
    """Position channels of the network input (:mod:`fusemycell.position`); the store keeps each volume's field."""

    @field_validator("patch_size_zyx")
    @classmethod
    def _positive(cls, value: tuple[int, int, int] | str) -> tuple[int, int, int] | str:
        if value != "auto" and min(value) < 1:  # type: ignore[arg-type]
            raise ValueError(f"patch sizes must be >= 1 voxel, got {value}")
        return value


def anisotropic_patch_size(
    spacing_zyx: Sequence[float], budget_voxels: int, *, xy_multiple: int = 16, z_multiple: int = 4
) -> tuple[int, int, int]:
    """A patch covering about the same micrometres along every axis, within ``budget_voxels``.

    With z spacing ``k`` times the xy spacing, z gets ``k`` times fewer voxels
    than y and x (at least ``z_multiple``, at most as many as y and x).
    """
    ratio = float(np.clip(spacing_zyx[1] / spacing_zyx[0], 1e-3, 1.0))  # z voxels per xy voxel, same extent
    side = (budget_voxels / ratio) ** (1 / 3)
    side_xy = max(xy_multiple, int(round(side / xy_multiple)) * xy_multiple)
    depth = max(z_multiple, int(round(side_xy * ratio / z_multiple)) * z_multiple)
    return min(depth, side_xy), side_xy, side_xy


def resolve_patch_size(config: PatchingConfig, spacings_zyx: Sequence[Sequence[float]]) -> tuple[int, int, int]:
    """The configured patch size, or the ``auto`` one for the median voxel size of the training volumes."""
    if config.patch_size_zyx != "auto":
        return tuple(int(v) for v in config.patch_size_zyx)  # type: ignore[return-value]
    median = np.median(np.asarray(spacings_zyx, dtype=float), axis=0) if len(spacings_zyx) else (1.0, 1.0, 1.0)
    return anisotropic_patch_size(median, config.patch_budget_voxels)
