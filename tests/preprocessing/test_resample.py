import numpy as np
import pytest

from fusemycell.preprocessing.resample import resample_axis, resampled_shape, source_planes, target_spacing


def test_resampled_shape_keeps_the_field_of_view():
    assert resampled_shape((20, 100, 90), (3.0, 0.4, 0.4), (1.0, 1.0, 1.0)) == (60, 40, 36)


def test_linear_ramp_is_resampled_exactly_inside_the_volume():
    ramp = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    up = resample_axis(ramp, 0, 20)
    # centres aligned: output o samples input (o + 0.5) / 2 - 0.5
    expected = np.clip((np.arange(20) + 0.5) / 2 - 0.5, 0, 9)
    np.testing.assert_allclose(up[:, 0, 0], expected, atol=1e-6)


def test_a_slab_of_the_output_equals_the_full_resampling():
    rng = np.random.default_rng(0)
    volume = rng.random((13, 5, 6)).astype(np.float32)
    full = resample_axis(volume, 0, 31)
    wanted = np.arange(10, 17)
    start, stop = source_planes(13, 31, wanted)
    slab = resample_axis(volume[start:stop], 0, 31, wanted, n_in=13, offset=start)
    np.testing.assert_allclose(slab, full[10:17], rtol=1e-6)
    assert stop - start <= 5  # only the planes it needs


@pytest.mark.parametrize("n_out", [13, 26, 40])
def test_upsampling_then_back_restores_smooth_data(n_out):
    z = np.linspace(0, np.pi, 13, dtype=np.float32)
    volume = np.sin(z)[:, None, None] * np.ones((1, 3, 3), np.float32)
    there_and_back = resample_axis(resample_axis(volume, 0, n_out), 0, 13)
    np.testing.assert_allclose(there_and_back, volume, atol=0.05)  # linear interpolation, clamped edges


def test_target_spacing_is_the_median_on_near_isotropic_data():
    assert target_spacing([(1.0, 0.5, 0.5), (1.2, 0.6, 0.6), (1.4, 0.7, 0.7)]) == (1.2, 0.6, 0.6)


def test_target_spacing_takes_the_thin_planes_of_anisotropic_light_sheet_data():
    """Median z 2 um over 0.39 um pixels is anisotropic: z takes the 10th percentile, the planes most volumes have."""
    spacings = [(1.0, 0.39, 0.39)] * 4 + [(2.0, 0.39, 0.39)] * 4 + [(3.0, 0.39, 0.39)] * 4
    assert target_spacing(spacings) == (1.0, 0.39, 0.39)
    assert target_spacing([(3.0, 0.33, 0.33)]) == (3.0, 0.33, 0.33)  # one study: its own grid, nothing resampled
    # few volumes: a voxel size the data has, not one between two studies (np.percentile would give 1.4)
    assert target_spacing([(1.0, 0.39, 0.39), (3.0, 0.39, 0.39), (3.0, 0.39, 0.39)])[0] == 1.0


@pytest.mark.parametrize("spacings", [[], [(0.0, 1.0, 1.0)], [(float("nan"), 1.0, 1.0)]])
def test_target_spacing_refuses_missing_or_invalid_voxel_sizes(spacings):
    with pytest.raises(ValueError, match="no usable voxel size"):
        target_spacing(spacings)
