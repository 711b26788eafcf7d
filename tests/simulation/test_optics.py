import numpy as np
import pytest

from fusemycell.simulation.optics import attenuation, camera, depth_varying_blur, gaussian_blur_um, tissue_depth_um


def test_tissue_depth_counts_only_tissue_along_the_axis():
    tissue = np.zeros((1, 1, 6), bool)
    tissue[..., 1:3] = True
    tissue[..., 4:] = True
    depth = tissue_depth_um(tissue, axis=2, spacing_um=2.0)[0, 0]
    # gaps between tissue do not attenuate: depth only grows inside tissue
    np.testing.assert_allclose(depth, [0, 1, 3, 4, 5, 7])


def test_attenuation_is_beer_lambert():
    np.testing.assert_allclose(attenuation(np.array([0.0, 10.0]), 10.0), [1.0, np.exp(-1)], rtol=1e-6)


def test_gaussian_blur_uses_physical_units():
    image = np.zeros((9, 9, 9), np.float32)
    image[4, 4, 4] = 1
    blurred = gaussian_blur_um(image, (2.0, 0.5, 0.5), (2.0, 0.5, 0.5))  # one voxel sigma on every axis
    profile_z, profile_x = blurred[:, 4, 4], blurred[4, 4, :]
    np.testing.assert_allclose(profile_z, profile_x, rtol=1e-5)
    assert blurred.sum() == pytest.approx(1.0, rel=1e-4)


def test_depth_varying_blur_matches_a_plain_blur_where_the_width_is_a_level():
    rng = np.random.default_rng(0)
    image = rng.random((24, 24, 24)).astype(np.float32)
    sigma = np.ones_like(image)
    sigma[:, :, 12:] = 3.0  # two widths, each exactly one of the levels
    out = depth_varying_blur(image, sigma, axes=(0,), spacing_zyx=(1, 1, 1), levels=3)
    narrow = gaussian_blur_um(image, (1.0, 0, 0), (1, 1, 1))
    wide = gaussian_blur_um(image, (3.0, 0, 0), (1, 1, 1))
    np.testing.assert_allclose(out[:, :, :12], narrow[:, :, :12], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, :, 12:], wide[:, :, 12:], rtol=1e-5, atol=1e-6)


def test_camera_noise_statistics():
    rng = np.random.default_rng(1)
    flat = np.full((20, 100, 100), 0.5, np.float32)
    counts = camera(flat, photons_at_unit=200, offset_adu=100, gain_adu_per_photon=2, read_noise_adu=3, rng=rng)
    assert counts.dtype == np.uint16
    # mean = offset + gain * photons; variance = gain^2 * photons + read^2 (Poisson-Gaussian)
    assert counts.mean() == pytest.approx(100 + 2 * 100, rel=0.01)
    assert counts.astype(float).var() == pytest.approx(4 * 100 + 9, rel=0.05)


def test_camera_clips_to_uint16():
    counts = camera(
        np.full((1, 2, 2), 1e9, np.float32),
        photons_at_unit=1.0,
        offset_adu=0,
        gain_adu_per_photon=1,
        read_noise_adu=0,
        rng=np.random.default_rng(0),
    )
    assert counts.max() == np.iinfo(np.uint16).max
