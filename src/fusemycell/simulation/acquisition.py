"""Simulated FuseMyCell acquisitions: one specimen seen as a single view and as a fusion.

Forward model (z: detection axis, x: illumination axis, depths are tissue path lengths):

* **Fused target**: ``F = camera(attn(d_z, L_f) * (rho * G(s_f)))``, a nearly
  uniform optical transfer: anisotropic Gaussian PSF ``G`` (sharper in xy than
  z), very long attenuation length ``L_f``, many photons.
* **Single view (angle)**:

  1. excitation ``E = rho * exp(-d_x / L_ill)``: the sheet fades along x;
  2. axial blur ``sigma_z(x) = sqrt(s_z^2 + (s_sheet + g_sheet * d_x)^2)``: the
     sheet thickens with depth so out-of-focus planes are excited;
  3. lateral blur ``sigma_xy(z) = sqrt(s_xy^2 + (g_det * d_z)^2)``: aberrations
     grow with the tissue between the plane and the objective;
  4. detection attenuation ``exp(-d_z / L_det)`` and a wide scattering halo
     ``h * G(s_halo) * E``;
  5. the camera: Poisson shot noise, gain, read noise, offset, uint16.

Both images share one voxel grid, like the challenge data.
"""

from __future__ import annotations

import numpy as np

from fusemycell.io.volume import Volume
from fusemycell.simulation.config import SimulationConfig, VolumeSpec
from fusemycell.simulation.optics import (
    attenuation,
    camera,
    depth_varying_blur,
    gaussian_blur_um,
    tissue_depth_um,
)
from fusemycell.simulation.specimen import Specimen, make_specimen


def volume_rng(seed: int, spec: VolumeSpec) -> np.random.Generator:
    """Independent random stream per volume, so adding a volume never changes the others."""
    channel_code = 0 if spec.channel == "nucleus" else 1
    return np.random.default_rng([seed, spec.image_id, channel_code])


def form_fused(specimen: Specimen, spec: VolumeSpec, config: SimulationConfig, scale: float) -> np.ndarray:
    """Noise-free fused irradiance (1.0 = ``config.fused.photons`` photons)."""
    params = config.fused
    spacing = spec.spacing_zyx
    blurred = gaussian_blur_um(
        specimen.density, (params.psf_sigma_z_um, params.psf_sigma_xy_um, params.psf_sigma_xy_um), spacing
    )
    depth_z = tissue_depth_um(specimen.tissue, 0, spacing[0])
    return blurred * attenuation(depth_z, params.attenuation_length_um) / np.float32(scale)


def form_single_view(specimen: Specimen, spec: VolumeSpec, config: SimulationConfig, scale: float) -> np.ndarray:
    """Noise-free single-view irradiance (1.0 = ``config.angle.photons`` photons)."""
    params = config.angle
    spacing = spec.spacing_zyx
    depth_x = tissue_depth_um(specimen.tissue, 2, spacing[2])
    depth_z = tissue_depth_um(specimen.tissue, 0, spacing[0])

    excitation = specimen.density * attenuation(depth_x, params.illumination_attenuation_length_um)
    sheet = params.sheet_sigma_um + params.sheet_growth_um_per_100um * depth_x / 100
    sigma_z = np.sqrt(params.psf_sigma_z_um**2 + sheet**2)
    image = depth_varying_blur(excitation, sigma_z, axes=(0,), spacing_zyx=spacing, levels=params.blur_levels)
    sigma_xy = np.sqrt(params.psf_sigma_xy_um**2 + (params.detection_blur_growth_um_per_100um * depth_z / 100) ** 2)
    image = depth_varying_blur(image, sigma_xy, axes=(1, 2), spacing_zyx=spacing, levels=params.blur_levels)
    halo = gaussian_blur_um(excitation, [params.haze_sigma_um] * 3, spacing)
    image = (image + params.haze_fraction * halo) * attenuation(depth_z, params.detection_attenuation_length_um)
    return image / np.float32(scale)


def simulate_pair(spec: VolumeSpec, config: SimulationConfig) -> tuple[Volume, Volume]:
    """Simulate one acquisition: ``(angle, fused)`` uint16 volumes with FuseMyCell metadata.

    Deterministic: the same ``config.seed`` and ``spec`` give identical voxels.
    """
    rng = volume_rng(config.seed, spec)
    specimen = make_specimen(spec.channel, spec.shape_zyx, spec.spacing_zyx, config.specimen, rng)
    # one brightness scale for both images: a bright label voxel maps to the photon budget
    scale = float(np.percentile(specimen.density[specimen.tissue], 99.5)) if specimen.tissue.any() else 1.0
    scale = scale if scale > 0 else 1.0
    cam = config.camera
    sensor = {
        "offset_adu": cam.offset_adu,
        "gain_adu_per_photon": cam.gain_adu_per_photon,
        "read_noise_adu": cam.read_noise_adu,
        "rng": rng,
    }
    fused = camera(form_fused(specimen, spec, config, scale), photons_at_unit=config.fused.photons, **sensor)
    angle = camera(form_single_view(specimen, spec, config, scale), photons_at_unit=config.angle.photons, **sensor)
    spelling = config.spellings[spec.image_id % len(config.spellings)]
    volumes = []
    for data in (angle, fused):
        metadata = {"channel": spec.channel, "study": spec.study}
        volumes.append(Volume(data=data, spacing_zyx=tuple(spec.spacing_zyx), metadata=metadata, spelling=spelling))
    return volumes[0], volumes[1]
