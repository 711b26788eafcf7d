import numpy as np
import pytest

from fusemycell.io.tiff import write_volume
from fusemycell.preprocessing.fingerprint import dataset_summary, scan_volume, scan_volumes


@pytest.fixture
def volume_file(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.gamma(2.0, 100.0, (11, 37, 29)) + 100).astype(np.uint16)
    data[4:7, 10:20, 5:15] += 3000  # a bright specimen
    path = write_volume(
        tmp_path / "image_0_nucleus_angle.tif", data, (2.0, 0.4, 0.4), {"study": "s1", "channel": "nucleus"}
    )
    return path, data


def test_scan_equals_whole_volume_statistics(volume_file):
    path, data = volume_file
    scan = scan_volume(str(path), pair="image_0_nucleus", kind="angle", channel="nucleus", slab_depth=3)
    assert scan.error is None
    assert scan.shape == data.shape and scan.dtype == "uint16"
    assert scan.spacing_zyx == pytest.approx((2.0, 0.4, 0.4))
    assert (scan.study, scan.metadata_channel) == ("s1", "nucleus")
    for q in (0.1, 2, 50, 99.8, 99.9):
        assert scan.percentile(q) == pytest.approx(np.percentile(data, q))
    np.testing.assert_allclose(scan.profile_z, data.mean(axis=(1, 2)))
    np.testing.assert_allclose(scan.profile_y, data.mean(axis=(0, 2)))
    np.testing.assert_allclose(scan.profile_x, data.mean(axis=(0, 1)))
    np.testing.assert_array_equal(scan.projections["yx"], data.max(axis=0))
    np.testing.assert_array_equal(scan.projections["zx"], data.max(axis=1))
    assert scan.minimum == data.min() and scan.maximum == data.max()
    # the bright box is foreground, the gamma background mostly not
    assert 300 / data.size <= scan.foreground_fraction < 0.2
    assert not scan.is_constant


def test_projections_are_downsampled_for_figures(volume_file):
    path, data = volume_file
    scan = scan_volume(str(path), pair="p", kind="angle", channel="nucleus", projection_side=16)
    assert max(scan.projections["yx"].shape) <= 16
    assert scan.projections["yx"].max() == data.max()


def test_unreadable_file_gives_an_error_instead_of_raising(tmp_path):
    bad = tmp_path / "image_1_nucleus_fused.tif"
    bad.write_text("nope")
    scan = scan_volume(str(bad), pair="image_1_nucleus", kind="fused", channel="nucleus")
    assert "image_1_nucleus_fused.tif" in scan.error and "not a readable TIFF" in scan.error
    assert scan.record()["error"] == scan.error


def test_parallel_scans_equal_sequential_scans(volume_file, tmp_path):
    path, data = volume_file
    other = write_volume(tmp_path / "b.tif", data[::-1], (1, 1, 1))
    jobs = [dict(path=str(p), pair="p", kind="angle", channel="nucleus") for p in (path, other)]
    sequential = scan_volumes(jobs, workers=1)
    parallel = scan_volumes(jobs, workers=2)
    assert [s.record() for s in sequential] == [s.record() for s in parallel]


def test_summary_gives_medians_per_study_and_channel(volume_file, tmp_path):
    path, data = volume_file
    scans = [
        scan_volume(str(path), pair="a", kind="angle", channel="nucleus"),
        scan_volume(
            str(write_volume(tmp_path / "c.tif", data[:5], (3.0, 0.4, 0.4), {"study": "s1"})),
            pair="c",
            kind="angle",
            channel="nucleus",
        ),
    ]
    (row,) = dataset_summary(scans)
    assert (row["study"], row["channel"], row["volumes"]) == ("s1", "nucleus", 2)
    assert row["median_size_z"] == 8.0 and row["median_spacing_z_um"] == 2.5
