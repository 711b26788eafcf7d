"""The ceilings rebuild the simulator's truth: each one scores above the acquired single view."""

import numpy as np
import pytest

from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim
from fusemycell.simulation.acquisition import simulate_pair
from fusemycell.simulation.ceilings import CEILINGS, ceiling_views
from fusemycell.simulation.config import SimulationConfig, VolumeSpec


@pytest.fixture(scope="module")
def simulated():
    spec = VolumeSpec(image_id=1, channel="nucleus", study="a", shape_zyx=(20, 48, 48), spacing_zyx=(1.0, 0.39, 0.39))
    config = SimulationConfig(seed=3, specimen={"cell_diameter_um": 5.0}, volumes=[spec])
    angle, fused = simulate_pair(spec, config)
    return spec, config, np.asarray(angle.data), np.asarray(fused.data)


def test_the_noise_free_view_is_the_acquired_one_without_its_noise(simulated):
    spec, config, angle, _ = simulated
    views = ceiling_views(spec, config, angle)
    assert set(views) == set(CEILINGS)
    camera = config.camera
    expected = (angle.astype(np.float64) - camera.offset_adu) / (camera.gain_adu_per_photon * config.angle.photons)
    # the acquired view is the noise-free one plus shot and read noise: close on average, not equal
    assert np.corrcoef(views["noise_free"].ravel(), expected.ravel())[0, 1] > 0.9
    assert not np.allclose(views["noise_free"], expected)


def test_the_noise_free_ceilings_score_above_the_input(simulated):
    _, _, angle, fused = simulated
    spec, config = simulated[0], simulated[1]
    target = image_statistics(fused)
    ssim_input = ssim(angle, fused, statistics=(image_statistics(angle), target))
    views = ceiling_views(spec, config, angle)
    for name in ("noise_free", "noise_free_gain_corrected"):
        score = normalized_ssim(
            ssim(views[name], fused, statistics=(image_statistics(views[name]), target)), ssim_input
        )
        assert score > 0.05, name


def test_gain_correction_divides_both_views_by_the_same_gain_of_at_most_one(simulated):
    spec, config, angle, _ = simulated
    views = ceiling_views(spec, config, angle)
    signal = angle.astype(np.float64) - config.camera.offset_adu
    usable = (np.abs(signal) > 1) & (views["noise_free"] > 1e-4)
    inverse_gain = views["gain_corrected"][usable] / signal[usable]
    np.testing.assert_allclose(
        views["noise_free_gain_corrected"][usable] / views["noise_free"][usable], inverse_gain, rtol=1e-3
    )
    assert inverse_gain.min() >= 1 - 1e-6 and inverse_gain.max() > 1.5  # light is lost with depth
