"""The napari reader: FuseMyCell TIFFs and OME-Zarr images as lazily read layers with their voxel size."""

import numpy as np
import pytest
import tifffile

from fusemycell.io.ome_zarr import write_ome_zarr
from fusemycell.io.tiff import LazyVolume, write_volume
from fusemycell.io.volume import VolumeFormatError
from fusemycell.napari.reader import get_reader, read_layers


@pytest.fixture
def volume():
    return np.random.default_rng(0).integers(100, 4000, (6, 20, 24), dtype=np.uint16)


def test_a_fusemycell_tiff_opens_lazily_with_its_scale_name_channel_and_contrast(tmp_path, volume):
    path = write_volume(tmp_path / "image_3_nucleus_angle.tif", volume, (2.0, 0.39, 0.39), {"study": "a"})
    reader = get_reader(str(path))
    assert reader is read_layers
    ((data, kwargs, kind),) = reader(str(path))
    assert kind == "image" and isinstance(data, LazyVolume)  # napari reads the planes it shows
    assert data.shape == volume.shape and np.array_equal(data[2], volume[2])
    assert kwargs["name"] == "image_3_nucleus_angle"
    np.testing.assert_allclose(kwargs["scale"], (2.0, 0.39, 0.39))
    assert kwargs["metadata"]["fusemycell"]["channel"] == "nucleus"
    assert kwargs["metadata"]["fusemycell"]["kind"] == "angle"
    np.testing.assert_allclose(kwargs["contrast_limits"], np.percentile(volume, (2, 99.8)))


def test_an_ome_zarr_written_by_the_project_opens_with_the_same_scale_and_voxels(tmp_path, volume):
    path = write_ome_zarr(
        tmp_path / "image_4_membrane_angle.ome.zarr", volume, (3.0, 0.5, 0.5), {"channel": "membrane"}
    )
    reader = get_reader(str(path) + "/")  # a folder, as napari may hand it
    assert reader is not None
    ((data, kwargs, _),) = reader(str(path))
    assert kwargs["name"] == "image_4_membrane_angle"
    np.testing.assert_allclose(kwargs["scale"], (3.0, 0.5, 0.5))
    assert np.array_equal(np.asarray(data), volume)
    assert kwargs["metadata"]["fusemycell"]["channel"] == "membrane"


def test_several_files_give_one_layer_each(tmp_path, volume):
    paths = [
        str(write_volume(tmp_path / f"image_1_nucleus_{kind}.tif", volume + offset, (1.0, 0.5, 0.5)))
        for kind, offset in (("angle", 0), ("fused", 100))
    ]
    layers = get_reader(paths)(paths)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["image_1_nucleus_angle", "image_1_nucleus_fused"]
    assert layers[1][1]["contrast_limits"][0] > layers[0][1]["contrast_limits"][0]


def test_other_files_are_left_to_napari_and_a_damaged_fusemycell_file_names_its_problem(tmp_path, volume):
    picture = tmp_path / "photo.tif"
    tifffile.imwrite(picture, volume[0])  # a 2D image: napari's own reader keeps it
    other_3d = write_volume(tmp_path / "embryo_t001.tif", volume, (1.0, 0.5, 0.5))
    (tmp_path / "notes.txt").write_text("hello")
    assert get_reader(str(picture)) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(other_3d), str(picture)]) is None  # all or nothing
    assert get_reader(str(other_3d)) is read_layers
    damaged = tmp_path / "image_2_nucleus_angle.tif"
    damaged.write_bytes(b"II*\x00" + b"\x00" * 10)
    reader = get_reader(str(damaged))
    assert reader is read_layers  # a challenge name is ours: the user gets our message, naming the file
    with pytest.raises(VolumeFormatError, match=r"image_2_nucleus_angle\.tif: "):
        reader(str(damaged))
