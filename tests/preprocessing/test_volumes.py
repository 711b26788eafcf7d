import pickle

import numpy as np
import pytest

from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.normalization import NormalizationStats, normalize
from fusemycell.preprocessing.resample import resample_axis
from fusemycell.preprocessing.volumes import PreprocessedVolume, VolumeTransform


@pytest.fixture
def raw(tmp_path):
    data = np.random.default_rng(0).integers(100, 4000, (12, 40, 36)).astype(np.uint16)
    return write_volume(tmp_path / "raw.tif", data, (2.0, 0.5, 0.5)), data


def _transform(data, resample=None):
    stats = NormalizationStats(low=float(np.percentile(data, 2)), high=float(np.percentile(data, 99.8)))
    return VolumeTransform(
        original_shape=data.shape,
        spacing_zyx=(2.0, 0.5, 0.5),
        box=((2, 10), (5, 35), (0, 30)),
        stats=stats,
        output_spacing_zyx=resample,
    )


def test_slabs_equal_crop_then_challenge_normalisation(raw):
    path, data = raw
    transform = _transform(data)
    lazy = PreprocessedVolume(str(path), transform)
    expected = normalize(data[2:10, 5:35, 0:30], transform.stats)
    assert lazy.shape == (8, 30, 30)
    np.testing.assert_allclose(lazy[0:3], expected[0:3], rtol=1e-6)
    np.testing.assert_allclose(lazy[5], expected[5], rtol=1e-6)
    np.testing.assert_allclose(lazy[2:6, 3:9, 4], expected[2:6, 3:9, 4], rtol=1e-6)


def test_resampled_slabs_equal_the_full_resampling(raw):
    path, data = raw
    transform = _transform(data, resample=(1.0, 1.0, 1.0))
    lazy = PreprocessedVolume(str(path), transform)
    cropped = normalize(data[2:10, 5:35, 0:30], transform.stats)
    assert lazy.shape == (16, 15, 15)
    full = resample_axis(resample_axis(resample_axis(cropped, 0, 16), 1, 15), 2, 15)
    np.testing.assert_allclose(np.concatenate([lazy[0:5], lazy[5:16]]), full, rtol=1e-5, atol=1e-6)
    assert transform.final_spacing_zyx == pytest.approx((1.0, 1.0, 1.0))


def test_written_volume_streams_the_transformation_and_pickles(raw, tmp_path):
    path, data = raw
    lazy = pickle.loads(pickle.dumps(PreprocessedVolume(str(path), _transform(data), np.float16)))
    out = write_volume(tmp_path / "out.tif", lazy, lazy.transform.final_spacing_zyx)
    written = read_volume(out)
    assert written.data.dtype == np.float16
    np.testing.assert_allclose(written.data, lazy[:].astype(np.float32), rtol=1e-3)


class _CountingRaw:
    """A raw array that records the voxels each read returns."""

    def __init__(self, data):
        self.data, self.voxels_read = data, []
        self.shape, self.dtype = data.shape, data.dtype

    def __getitem__(self, key):
        block = self.data[key]
        self.voxels_read.append(block.size)
        return block


@pytest.mark.parametrize("resample", [None, (1.0, 1.0, 1.0), (2.0, 0.5, 0.7)])
def test_a_box_reads_only_the_raw_voxels_it_needs_and_equals_the_cut_planes(raw, resample):
    path, data = raw
    transform = _transform(data, resample=resample)
    whole = PreprocessedVolume(str(path), transform)[:]
    lazy = PreprocessedVolume(str(path), transform)
    counting = _CountingRaw(data)
    lazy._source = counting  # the raw reader, replaced by one that counts
    ny, nx = lazy.shape[1:]
    for z, rows, columns in [
        (slice(1, 4), slice(2, ny // 2), slice(3, nx - 1)),
        (slice(0, 2), slice(ny - 3, None), slice(None, 4)),
        (2, slice(0, 1), slice(nx - 1, nx)),
    ]:
        counting.voxels_read.clear()
        box = lazy[z, rows, columns]
        np.testing.assert_array_equal(box, whole[z, rows, columns])
        # the raw voxels under the box, plus one neighbour per side for the interpolation (whole planes: 3x more)
        planes = len(range(*z.indices(lazy.shape[0]))) if isinstance(z, slice) else 1
        raw_per_output = np.array(transform.cropped_shape) / np.array(lazy.shape)
        needed = np.ceil(np.array([planes, *box.shape[-2:]]) * raw_per_output) + 2
        assert sum(counting.voxels_read) <= np.prod(needed)


def test_boxes_with_steps_or_lists_are_cut_from_whole_planes(raw):
    path, data = raw
    lazy = PreprocessedVolume(str(path), _transform(data))
    whole = lazy[:]
    np.testing.assert_array_equal(lazy[1:5, ::2, 3], whole[1:5, ::2, 3])
    np.testing.assert_array_equal(lazy[[0, 3], 1:6, [2, 4]], whole[[0, 3], 1:6][..., [2, 4]])
    assert lazy[2:2, 1:3].shape == (0, 2, 30)


@pytest.mark.parametrize("resample", [None, (1.0, 1.0, 1.0)])
def test_empty_boxes_of_a_file_are_empty_arrays(raw, resample):
    path, data = raw
    lazy = PreprocessedVolume(str(path), _transform(data, resample=resample))
    depth, rows, columns = lazy.shape
    assert lazy[:, 3:3].shape == (depth, 0, columns)
    assert lazy[:, :, 4:4].shape == (depth, rows, 0)
    assert lazy[0, 5:2].shape == (0, columns)


def _scanned_pairs(make_volume, spacings_z):
    """``image_{i}_nucleus`` pairs whose planes are ``spacings_z[i]`` um apart, and their scans."""
    from fusemycell.io.pairs import pair_files
    from fusemycell.preprocessing.fingerprint import scan_volume

    paths = []
    for i, z in enumerate(spacings_z):
        for kind in ("angle", "fused"):
            paths.append(str(make_volume(f"image_{i}_nucleus_{kind}.tif", spacing=(z, 0.4, 0.4), seed=i)))
    listing = pair_files(sorted(paths))
    scans = {
        f"{key}_{kind}": scan_volume(
            getattr(pair, kind), pair=key, kind=kind, channel=pair.channel, percentiles=[2, 99.8, 99.9]
        )
        for key, pair in listing.items()
        for kind in ("angle", "fused")
    }
    return listing, scans


def test_resample_auto_chooses_the_target_from_the_training_volumes_alone(make_volume):
    from fusemycell.preprocessing.config import PreprocessingConfig
    from fusemycell.preprocessing.volumes import plan_volumes

    listing, scans = _scanned_pairs(make_volume, [1.0, 2.0, 3.0])
    config = PreprocessingConfig(resample={"enabled": "auto"}, crop={"enabled": False})
    training = ["image_0_nucleus", "image_1_nucleus"]  # the 3 um pair is held out
    volumes, records = plan_volumes(listing, scans, list(listing), config, training)
    targets = {(r["resample_target_z_um"], r["resample_target_y_um"], r["resample_target_x_um"]) for r in records}
    assert targets == {(1.0, 0.4, 0.4)}  # the 10th percentile of 1 and 2 um planes (anisotropic), not the test's 3
    assert volumes["image_2_nucleus_angle"].data.shape[0] == 30  # thick planes interpolated: 10 planes of 3 um
    assert volumes["image_0_nucleus_angle"].data.shape[0] == 10  # already on the target: as acquired


def test_resample_off_and_auto_on_one_study_keep_the_acquisition_grid(make_volume):
    from fusemycell.preprocessing.config import PreprocessingConfig
    from fusemycell.preprocessing.volumes import plan_volumes

    listing, scans = _scanned_pairs(make_volume, [2.0, 2.0])
    for enabled in (False, "auto"):
        config = PreprocessingConfig(resample={"enabled": enabled}, crop={"enabled": False})
        volumes, _ = plan_volumes(listing, scans, list(listing), config)
        read = np.asarray(read_volume(listing["image_0_nucleus"].angle).data, dtype=np.float32)
        assert volumes["image_0_nucleus_angle"].data.shape == read.shape
        np.testing.assert_allclose(
            np.asarray(volumes["image_0_nucleus_angle"].data[:]).mean(),
            normalize(
                read,
                NormalizationStats(
                    low=scans["image_0_nucleus_angle"].percentile(2),
                    high=scans["image_0_nucleus_angle"].percentile(99.8),
                ),
            ).mean(),
            rtol=1e-5,
        )


def test_resample_needs_a_target_when_enabled_and_takes_a_given_one_with_auto(make_volume):
    from pydantic import ValidationError

    from fusemycell.preprocessing.config import PreprocessingConfig
    from fusemycell.preprocessing.volumes import resample_target

    with pytest.raises(ValidationError, match="needs target_spacing_zyx"):
        PreprocessingConfig(resample={"enabled": True})
    listing, scans = _scanned_pairs(make_volume, [1.0, 2.0])
    given = PreprocessingConfig(resample={"enabled": "auto", "target_spacing_zyx": [1.5, 0.5, 0.5]})
    assert resample_target(scans, list(listing), given) == (1.5, 0.5, 0.5)  # the user's target, not the rule's
    assert resample_target(scans, list(listing), PreprocessingConfig()) == (1.0, 0.4, 0.4)  # auto is the default
    assert resample_target(scans, list(listing), PreprocessingConfig(resample={"enabled": False})) is None
