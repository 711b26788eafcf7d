import numpy as np
import pytest

from fusemycell.simulation import simulate_pair
from fusemycell.simulation.acquisition import form_fused, volume_rng
from fusemycell.simulation.specimen import make_specimen


def test_simulation_is_deterministic(small_config):
    spec = small_config.volumes[0]
    angle_1, fused_1 = simulate_pair(spec, small_config)
    angle_2, fused_2 = simulate_pair(spec, small_config)
    np.testing.assert_array_equal(angle_1.data, angle_2.data)
    np.testing.assert_array_equal(fused_1.data, fused_2.data)
    other_seed = small_config.model_copy(update={"seed": small_config.seed + 1})
    assert not np.array_equal(simulate_pair(spec, other_seed)[0].data, angle_1.data)


@pytest.mark.parametrize("index", [0, 1])
def test_pair_has_the_real_format(small_config, index):
    spec = small_config.volumes[index]
    angle, fused = simulate_pair(spec, small_config)
    for volume in (angle, fused):
        assert volume.data.dtype == np.uint16
        assert volume.shape == spec.shape_zyx  # one voxel grid for angle and fused
        assert volume.spacing_zyx == spec.spacing_zyx
        assert volume.metadata == {"channel": spec.channel, "study": spec.study}
        # camera offset and noise: no voxel is exactly zero, the signal is far above the offset
        assert volume.data.min() > 0
        assert np.percentile(volume.data, 99.9) > 2 * small_config.camera.offset_adu


def _band_quality(image, reference, tissue, axis, part):
    """Correlation with the noise-free target inside tissue, in the first or last third along ``axis``."""
    n = image.shape[axis]
    band = [slice(None)] * 3
    band[axis] = slice(0, n // 3) if part == "shallow" else slice(n - n // 3, n)
    band = tuple(band)
    inside = tissue[band]
    return np.corrcoef(image[band][inside].astype(float), reference[band][inside])[0, 1]


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("axis", [0, 2], ids=["detection-z", "illumination-x"])
def test_single_view_quality_falls_with_depth_but_fused_does_not(small_config, index, axis):
    spec = small_config.volumes[index]
    angle, fused = simulate_pair(spec, small_config)
    specimen = make_specimen(
        spec.channel, spec.shape_zyx, spec.spacing_zyx, small_config.specimen, volume_rng(small_config.seed, spec)
    )
    ideal = form_fused(specimen, spec, small_config, scale=1.0)  # noise-free target
    angle_drop = _band_quality(angle.data, ideal, specimen.tissue, axis, "shallow") - _band_quality(
        angle.data, ideal, specimen.tissue, axis, "deep"
    )
    fused_drop = abs(
        _band_quality(fused.data, ideal, specimen.tissue, axis, "shallow")
        - _band_quality(fused.data, ideal, specimen.tissue, axis, "deep")
    )
    assert angle_drop > 0.08
    assert fused_drop < 0.02


def test_single_view_is_dimmer_deep_along_the_illumination_axis(small_config):
    spec = small_config.volumes[0]
    angle, fused = simulate_pair(spec, small_config)
    offset = small_config.camera.offset_adu
    width = spec.shape_zyx[2]

    def ratio(image):
        signal = image.astype(float) - offset
        return signal[:, :, : width // 3].mean() / signal[:, :, -(width // 3) :].mean()

    assert ratio(angle.data) > 1.5 * ratio(fused.data)


def test_spellings_rotate_over_volumes(small_config):
    spellings = {simulate_pair(spec, small_config)[0].spelling for spec in small_config.volumes}
    assert spellings == set(small_config.spellings[: len(small_config.volumes)])
