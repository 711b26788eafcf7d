import numpy as np
import pytest
from skimage.filters import threshold_otsu

from fusemycell.normalization import CHALLENGE_PERCENTILES, IntensityHistogram, NormalizationStats, normalize
from tests.challenge_reference import percentile_normalize


def test_slab_wise_normalisation_equals_the_challenge_formula():
    image = np.random.default_rng(0).gamma(2.0, 300.0, (6, 30, 31)).astype(np.uint16)
    histogram = IntensityHistogram(image.dtype)
    for z0 in range(0, len(image), 2):
        histogram.add(image[z0 : z0 + 2])
    low, high = histogram.percentiles(CHALLENGE_PERCENTILES)
    result = normalize(image, NormalizationStats(low=low, high=high), dtype=np.float64)
    np.testing.assert_allclose(result, percentile_normalize(image), rtol=0, atol=1e-12)
    assert result.min() < 0 and result.max() > 1  # no clipping


def test_constant_image_is_returned_unchanged():
    image = np.full((3, 4, 5), 7, np.uint16)
    assert percentile_normalize(image) is image  # the challenge's own behaviour, which ours follows
    stats = NormalizationStats(low=7, high=7)
    assert stats.is_constant
    np.testing.assert_array_equal(normalize(image, stats), image.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8, np.float32, np.int32])
@pytest.mark.parametrize("slab", [1, 3, 100])
def test_histogram_percentiles_equal_numpy_on_the_whole_volume(dtype, slab):
    rng = np.random.default_rng(1)
    values = rng.gamma(1.5, 400.0, (9, 20, 23))
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(values - (200 if info.min < 0 else 0), info.min, info.max)
    volume = values.astype(dtype)
    histogram = IntensityHistogram(volume.dtype)
    for z0 in range(0, len(volume), slab):
        histogram.add(volume[z0 : z0 + slab])
    qs = [0, 0.1, 2, 50, 99.8, 99.9, 100]
    np.testing.assert_allclose(histogram.percentiles(qs), np.percentile(volume, qs), rtol=0, atol=1e-9)
    assert histogram.mean == pytest.approx(float(volume.mean()))
    assert histogram.exact_histogram == (np.dtype(dtype).itemsize <= 2 and np.dtype(dtype).kind in "iu")


def test_float_histogram_counts_and_ignores_non_finite_voxels():
    volume = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    volume[0, 0, :2] = [np.nan, np.inf]
    histogram = IntensityHistogram(volume.dtype)
    histogram.add(volume)
    assert histogram.nonfinite == 2
    finite = volume[np.isfinite(volume)]
    assert histogram.percentiles([50])[0] == pytest.approx(np.percentile(finite, 50))


def test_otsu_threshold_matches_scikit_image():
    rng = np.random.default_rng(2)
    volume = np.concatenate([rng.normal(100, 5, 5000), rng.normal(900, 60, 2000)]).clip(0).astype(np.uint16)
    histogram = IntensityHistogram(volume.dtype)
    histogram.add(volume)
    assert abs(histogram.otsu_threshold() - threshold_otsu(volume)) <= 2
    assert histogram.fraction_above(histogram.otsu_threshold()) == pytest.approx(2000 / 7000, abs=0.01)


def test_a_large_block_is_normalised_in_chunks_with_the_same_values(monkeypatch):
    from fusemycell import normalization

    data = np.random.default_rng(3).integers(0, 60000, (9, 33, 17)).astype(np.uint16)
    stats = normalization.NormalizationStats(low=412.5, high=51234.0)
    whole = normalization.normalize(data, stats)
    monkeypatch.setattr(normalization, "NORMALIZE_CHUNK_VOXELS", 2 * 33 * 17 + 5)  # chunks of 2 planes
    chunked = normalization.normalize(data, stats)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(normalization.normalize(data, stats, np.float64), (data - 412.5) / (51234.0 - 412.5))
