"""Every broken file gives a VolumeFormatError that names the file and the problem."""

import numpy as np
import pytest
import tifffile

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.tiff import LazyVolume, write_volume
from fusemycell.io.volume import VolumeFormatError


def _write(path, array, **kwargs):
    tifffile.imwrite(path, array, **kwargs)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: p, "file not found"),
        (lambda p: (p.write_bytes(b""), p)[1], "empty"),
        (lambda p: (p.write_text("not an image at all"), p)[1], "not a readable TIFF"),
        (lambda p: _write(p, np.zeros((20, 20), np.uint16)), "2D"),
        (lambda p: _write(p, np.zeros((2, 3, 8, 8), np.uint16), imagej=True), "4D"),
        (lambda p: _write(p, np.zeros((2, 2, 3, 8, 8), np.uint16), imagej=True), "5D"),
        (lambda p: _write(p, np.zeros((3, 8, 8, 3), np.uint8), photometric="rgb"), "samples per pixel"),
        (lambda p: _write(p, np.zeros((4, 8, 8), bool), photometric="minisblack"), "voxel type bool"),
        (lambda p: _write(p, np.zeros((4, 8, 8), np.complex64), photometric="minisblack"), "voxel type complex64"),
    ],
    ids=["missing", "empty", "not-tiff", "2d", "4d", "5d", "rgb", "bool", "complex"],
)
def test_bad_files_are_rejected_with_the_file_name_and_the_problem(tmp_path, make, problem):
    path = make(tmp_path / "image_1_nucleus_angle.tif")
    with pytest.raises(VolumeFormatError) as raised:
        read_volume(path)
    assert "image_1_nucleus_angle.tif" in str(raised.value)
    assert problem in str(raised.value)


def test_a_folder_is_not_a_volume(tmp_path):
    with pytest.raises(VolumeFormatError, match="is a folder"):
        read_info(tmp_path)


def test_truncated_file_is_reported_not_a_numpy_traceback(tmp_path):
    path = write_volume(tmp_path / "whole.tif", np.ones((6, 200, 200), np.uint16), (1, 1, 1))
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VolumeFormatError, match="truncated.tif.*truncated"):
        read_volume(truncated)
    with pytest.raises(VolumeFormatError, match="truncated.tif: file truncated"):
        read_volume(truncated, lazy=True)  # found from the header, before any voxel is read
    lazy = LazyVolume(truncated, read_info(path))  # a file cut after its header was read
    with pytest.raises(VolumeFormatError, match="truncated.tif.*truncated"):
        lazy[:]


def test_truncated_header_is_reported(tmp_path):
    path = write_volume(tmp_path / "whole.tif", np.ones((2, 8, 8), np.uint16), (1, 1, 1))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[:12])
    with pytest.raises(VolumeFormatError, match="cut.tif"):
        read_info(cut)
