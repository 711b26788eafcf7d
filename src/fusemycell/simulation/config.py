"""Typed, validated parameters of the light-sheet simulator.

Every field has a physical meaning, a unit and bounds; a bad value fails when the
parameters are loaded, with a message naming the field. The YAML in
``conf/base/parameters_simulation.yml`` maps one to one onto these classes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from fusemycell.configuration import StrictConfig
from fusemycell.io.metadata import SPACING_SPELLINGS


class VolumeSpec(StrictConfig):
    """One synthetic acquisition: an angle/fused pair on one voxel grid."""

    image_id: int = Field(ge=0)
    """``N`` in ``image_{N}_{channel}_{angle|fused}.tif``."""
    channel: Literal["nucleus", "membrane"]
    """What is labelled: nuclei, or cell membranes."""
    study: str = Field(min_length=1)
    """Study name written to the metadata (the challenge has five)."""
    shape_zyx: tuple[int, int, int]
    """Voxels along z, y, x. Need not be divisible by anything."""
    spacing_zyx: tuple[float, float, float]
    """Voxel size along z, y, x in micrometres."""

    @field_validator("shape_zyx")
    @classmethod
    def _shape_positive(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(v < 4 for v in value):
            raise ValueError(f"every axis needs at least 4 voxels, got {value}")
        return value

    @field_validator("spacing_zyx")
    @classmethod
    def _spacing_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError(f"voxel sizes must be > 0 micrometres, got {value}")
        return value


class SpecimenParams(StrictConfig):
    """The sample: an embryo-like body packed with cells."""

    body_semi_axes_fraction: tuple[float, float, float] = (0.42, 0.40, 0.40)
    """Semi-axes (z, y, x) of the ellipsoidal body as fractions of the field of view."""
    cell_diameter_um: float = Field(default=7.0, gt=0)
    """Mean cell diameter; with the body volume it sets the number of cells."""
    nucleus_fraction: float = Field(default=0.55, gt=0, lt=1)
    """Nucleus diameter as a fraction of the cell diameter."""
    nucleus_size_spread: float = Field(default=0.15, ge=0, lt=1)
    """Relative spread of nucleus sizes (log-normal sigma)."""
    membrane_thickness_um: float = Field(default=0.6, gt=0)
    """Thickness of a cell membrane (FWHM of the shell profile)."""
    brightness_spread: float = Field(default=0.35, ge=0)
    """Spread of per-cell label brightness (log-normal sigma)."""
    texture_strength: float = Field(default=0.35, ge=0, le=1)
    """Chromatin / membrane texture: relative amplitude of smoothed noise."""
    texture_scale_um: float = Field(default=0.6, gt=0)
    """Correlation length of the texture."""
    autofluorescence: float = Field(default=0.04, ge=0, le=1)
    """Diffuse signal inside the body, relative to a mean cell."""


class FusedParams(StrictConfig):
    """The target: what multi-view fusion delivers, a nearly uniform optical transfer."""

    psf_sigma_xy_um: float = Field(default=0.3, gt=0)
    """Lateral PSF width (Gaussian sigma)."""
    psf_sigma_z_um: float = Field(default=0.9, gt=0)
    """Axial PSF width after fusion; wider than lateral, as in any fusion of a few views."""
    attenuation_length_um: float = Field(default=500.0, gt=0)
    """Residual intensity decay with depth after fusion (e-folding length, large = uniform)."""
    photons: float = Field(default=3000.0, gt=0)
    """Detected photons at a bright voxel; high because fusion averages several views."""


class AngleParams(StrictConfig):
    """The input: one illumination side (along x) and one detection side (along z)."""

    illumination_attenuation_length_um: float = Field(default=30.0, gt=0)
    """Light-sheet intensity decay with the tissue path from the illumination side (e-folding length)."""
    sheet_sigma_um: float = Field(default=0.9, ge=0)
    """Light-sheet half thickness (Gaussian sigma) where it enters the specimen."""
    sheet_growth_um_per_100um: float = Field(default=6.0, ge=0)
    """Sheet thickening by scattering: sigma added per 100 um of illuminated tissue."""
    detection_attenuation_length_um: float = Field(default=35.0, gt=0)
    """Emission decay with the tissue path towards the detection objective (e-folding length)."""
    psf_sigma_xy_um: float = Field(default=0.3, gt=0)
    """Lateral PSF width at the specimen surface."""
    psf_sigma_z_um: float = Field(default=1.6, gt=0)
    """Axial PSF width of the detection objective alone."""
    detection_blur_growth_um_per_100um: float = Field(default=5.0, ge=0)
    """Lateral blur added per 100 um of tissue between the plane and the objective (aberrations)."""
    haze_fraction: float = Field(default=0.2, ge=0)
    """Scattered light: share of the signal spread into a wide halo."""
    haze_sigma_um: float = Field(default=5.0, gt=0)
    """Width of the scattering halo."""
    photons: float = Field(default=400.0, gt=0)
    """Detected photons at a bright voxel in a single view (one camera exposure)."""
    blur_levels: int = Field(default=6, ge=2, le=32)
    """Number of precomputed blur widths interpolated for the depth-varying blur."""


class CameraParams(StrictConfig):
    """An sCMOS camera: Poisson shot noise, Gaussian read noise, offset, gain."""

    offset_adu: float = Field(default=100.0, ge=0)
    """Dark level added to every pixel, in camera units (ADU)."""
    gain_adu_per_photon: float = Field(default=2.0, gt=0)
    """Camera units per detected photon."""
    read_noise_adu: float = Field(default=2.0, ge=0)
    """Standard deviation of the read noise, in ADU."""


class SimulationConfig(StrictConfig):
    """Everything the simulator needs; built from ``params:simulation``."""

    seed: int = 2025
    """Random seed; each volume derives its own stream from it and its ``image_id``."""
    spellings: tuple[str, ...] = ("PhysicalSizeX", "physicalsizex", "physical_size_x")
    """Spellings of the voxel-size keys, used in turn, like the mixed real data."""
    volumes: tuple[VolumeSpec, ...] = Field(min_length=1)
    """The acquisitions to simulate."""
    specimen: SpecimenParams = SpecimenParams()
    fused: FusedParams = FusedParams()
    angle: AngleParams = AngleParams()
    camera: CameraParams = CameraParams()

    @field_validator("spellings")
    @classmethod
    def _known_spellings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in SPACING_SPELLINGS]
        if unknown or not value:
            raise ValueError(f"spellings must be among {sorted(SPACING_SPELLINGS)}, got {list(value)}")
        return value

    @field_validator("volumes")
    @classmethod
    def _unique_pairs(cls, value: tuple[VolumeSpec, ...]) -> tuple[VolumeSpec, ...]:
        keys = [(v.image_id, v.channel) for v in value]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate (image_id, channel) in volumes: {duplicates}")
        return value
