"""What a perfect model of part of the degradation would score: ceilings from the simulator's own truth.

For a simulated acquisition the simulator knows what a trained network can only estimate. Scored
with the challenge's metric against the simulated fused file, these references show how much of
the reachable gain a method takes, without any training:

``gain_corrected``
    The single view as acquired (noise included) divided by the true depth-dependent gain (the
    sheet's fading along x and the emission's along z): what perfect intensity correction gives.
``noise_free``
    The single view without camera noise: what perfect denoising gives.
``noise_free_gain_corrected``
    Both: what is left is blur and haze only.

Each is rebuilt from the volume's specification and the simulation parameters (the specimen is
drawn from the same random stream as :func:`~fusemycell.simulation.acquisition.simulate_pair`).
"""

from __future__ import annotations

import numpy as np

from fusemycell.simulation.acquisition import form_single_view, volume_rng
from fusemycell.simulation.config import SimulationConfig, VolumeSpec
from fusemycell.simulation.optics import attenuation, tissue_depth_um
from fusemycell.simulation.specimen import make_specimen

CEILINGS = ("gain_corrected", "noise_free", "noise_free_gain_corrected")

#: The smallest gain divided by (deep tissue where almost no light arrives would be amplified without bound).
MIN_GAIN = 0.05


def ceiling_views(spec: VolumeSpec, config: SimulationConfig, acquired: np.ndarray) -> dict[str, np.ndarray]:
    """The three ceilings (float32, ZYX) of one simulated volume; ``acquired`` is its single view as written."""
    rng = volume_rng(config.seed, spec)
    specimen = make_specimen(spec.channel, spec.shape_zyx, spec.spacing_zyx, config.specimen, rng)
    scale = float(np.percentile(specimen.density[specimen.tissue], 99.5)) if specimen.tissue.any() else 1.0
    scale = scale if scale > 0 else 1.0
    spacing = spec.spacing_zyx
    angle = config.angle
    gain = attenuation(tissue_depth_um(specimen.tissue, 2, spacing[2]), angle.illumination_attenuation_length_um)
    gain = gain * attenuation(tissue_depth_um(specimen.tissue, 0, spacing[0]), angle.detection_attenuation_length_um)
    gain = np.maximum(gain, MIN_GAIN).astype(np.float32)
    noise_free = form_single_view(specimen, spec, config, scale).astype(np.float32)
    signal = acquired.astype(np.float32) - np.float32(config.camera.offset_adu)
    return {
        "gain_corrected": signal / gain,
        "noise_free": noise_free,
        "noise_free_gain_corrected": noise_free / gain,
    }
