"""Typed configuration of the 3D U-Net; saved with the weights so a checkpoint alone rebuilds the network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from fusemycell.configuration import StrictConfig


class UNetConfig(StrictConfig):
    """Architecture of :class:`fusemycell.models.unet.UNet3D`."""

    in_channels: int = Field(default=1, ge=1)
    """Input channels: the single view, then the position channels (:mod:`fusemycell.position`)."""
    out_channels: int = Field(default=1, ge=1)
    """Output channels (the predicted fusion)."""
    depth: int = Field(default=4, ge=1, le=7)
    """Resolution levels; ``depth - 1`` poolings."""
    base_channels: int = Field(default=16, ge=1)
    """Feature maps at full resolution; doubled at every level."""
    max_channels: int = Field(default=256, ge=1)
    """Cap on feature maps at coarse levels."""
    convs_per_level: int = Field(default=2, ge=1, le=4)
    """3x3x3 convolutions per level, each followed by normalisation and activation."""
    normalization: Literal["none", "instance", "group", "batch"] = "none"
    """Feature normalisation. ``none``: convolutions with a bias and no per-sample statistics, so the
    network is tile-invariant (exact tiling, :mod:`fusemycell.inference.tiling`) and sees absolute
    brightness; ``instance`` and ``group`` normalise every tile by its own statistics (tiles are then
    blended); ``batch`` uses running statistics at inference (tile-invariant too). ``none`` is the
    default from the quality benchmark (docs/benchmarks.md, "What each default brings": instance with
    blended tiles scored 0.19 lower in test N_SSIM over 4 paired seeds at equal wall-clock)."""
    groups: int = Field(default=8, ge=1)
    """Groups for group normalisation (reduced to divide the channels)."""
    activation: Literal["leaky_relu", "relu", "gelu", "silu"] = "leaky_relu"
    """Non-linearity."""
    upsampling: Literal["trilinear", "transposed"] = "trilinear"
    """Trilinear interpolation then a convolution, or a transposed convolution."""
    residual: bool = True
    """Predict a correction added to the input's first ``out_channels`` channels instead of the image itself."""
    residual_blur_sigma: float = Field(default=0.5, ge=0, le=4)
    """Add the correction to a Gaussian blur of the input (sigma in voxels) instead of the input itself.

    The network then starts as the public blur baseline and learns what a blur cannot do; 0 = the input."""
    gain_offset: bool = False
    """With a residual network, also predict a gain ``g`` and an offset ``h`` per voxel:
    ``out = exp(g) * base + h + correction``. A single view loses brightness with depth (attenuation)
    and gains haze; a gain and an offset say that directly, which a convolution's additive
    correction must otherwise learn as a product with the input."""
    residual_scale: float = Field(default=1.0, ge=0, le=1)
    """Weight of the learnt correction over the residual base: 1 as trained; the guard
    (:mod:`fusemycell.training.guard`) lowers it where whole validation volumes score better."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout before the bottleneck convolutions."""
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Voxel size the network is trained at; drives :func:`pooling_schedule`."""
    pool_z: tuple[bool, ...] | None = None
    """Pool z at each of the ``depth - 1`` levels; null = nnU-Net's rule from ``spacing_zyx``."""

    @model_validator(mode="after")
    def _pool_z_length(self) -> UNetConfig:
        if self.pool_z is not None and len(self.pool_z) != self.depth - 1:
            raise ValueError(f"pool_z needs depth - 1 = {self.depth - 1} entries, got {len(self.pool_z)}")
        return self

    @property
    def has_residual(self) -> bool:
        """The output is a correction of the input's first channels (``residual``, and enough input channels)."""
        return self.residual and self.in_channels >= self.out_channels

    @property
    def tile_invariant(self) -> bool:
        """True when a voxel's prediction depends only on its neighbourhood, not on the tile it was cut with.

        Instance and group normalisation take statistics over the whole input (each tile's own); without
        them (``none``, or ``batch`` with its running statistics at inference) exact tiling reproduces
        the whole-volume prediction.
        """
        return self.normalization in ("none", "batch")

    @property
    def pooling(self) -> list[tuple[int, int, int]]:
        """Pooling kernel ``(z, y, x)`` of each level."""
        if self.pool_z is not None:
            return [(2 if pool else 1, 2, 2) for pool in self.pool_z]
        return pooling_schedule(self.spacing_zyx, self.depth)

    @property
    def size_multiple(self) -> tuple[int, int, int]:
        """Input sizes must be multiples of this (the model pads to it at its boundary)."""
        multiple = [1, 1, 1]
        for kernel in self.pooling:
            multiple = [m * k for m, k in zip(multiple, kernel)]
        return tuple(multiple)  # type: ignore[return-value]

    def channels(self, level: int) -> int:
        """Feature maps at ``level`` (0 = full resolution)."""
        return min(self.base_channels * 2**level, self.max_channels)


def pooling_schedule(spacing_zyx: Sequence[float], depth: int) -> list[tuple[int, int, int]]:
    """nnU-Net's rule: an axis is pooled only while its spacing is within 2x of the finest axis.

    After each pooling the pooled axes' spacings double, so a z spacing 3x the xy
    spacing is left alone until xy has caught up.
    """
    spacing = list(map(float, spacing_zyx))
    schedule = []
    for _ in range(depth - 1):
        finest = min(spacing)
        kernel = tuple(2 if s <= 2 * finest else 1 for s in spacing)
        schedule.append(kernel)
        spacing = [s * k for s, k in zip(spacing, kernel)]
    return schedule  # type: ignore[return-value]
