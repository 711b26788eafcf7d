import base64
import io

import numpy as np
import pytest
from kedro.io.core import DatasetError, Version
from PIL import Image

from fusemycell.datasets import TiffVolumeDataset
from fusemycell.io.tiff import LazyVolume, write_volume
from fusemycell.io.volume import Volume


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    data = rng.integers(100, 4000, size=(9, 70, 50), dtype=np.uint16)
    return Volume(data=data, spacing_zyx=(2.0, 0.39, 0.39), metadata={"channel": "nucleus", "study": "a"})


def test_save_and_load_round_trip(tmp_path, volume):
    dataset = TiffVolumeDataset(filepath=str(tmp_path / "sub" / "image_0_nucleus_angle.tif"))
    assert not dataset.exists()
    dataset.save(volume)
    assert dataset.exists()
    loaded = dataset.load()
    np.testing.assert_array_equal(loaded.data, volume.data)
    assert loaded.spacing_zyx == pytest.approx(volume.spacing_zyx)
    assert loaded.metadata["channel"] == "nucleus"


def test_lazy_load_returns_a_lazy_volume(tmp_path, volume):
    path = write_volume(tmp_path / "v.tif", volume.data, volume.spacing_zyx)
    loaded = TiffVolumeDataset(filepath=str(path), load_args={"lazy": True}).load()
    assert isinstance(loaded.data, LazyVolume)
    np.testing.assert_array_equal(loaded.data[3:5], volume.data[3:5])


def test_versioned_saves_keep_every_version(tmp_path, volume):
    path = str(tmp_path / "v.tif")
    TiffVolumeDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")).save(volume)
    brighter = Volume(data=volume.data * 2, spacing_zyx=volume.spacing_zyx)
    TiffVolumeDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(brighter)
    latest = TiffVolumeDataset(filepath=path, version=Version(None, None)).load()
    first = TiffVolumeDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    np.testing.assert_array_equal(latest.data, brighter.data)
    np.testing.assert_array_equal(first.data, volume.data)


def test_bad_file_raises_dataset_error_naming_it(tmp_path):
    path = tmp_path / "image_3_nucleus_angle.tif"
    path.write_text("definitely not a tiff")
    with pytest.raises(DatasetError, match="image_3_nucleus_angle.tif.*not a readable TIFF"):
        TiffVolumeDataset(filepath=str(path)).load()


def test_saving_something_else_than_a_volume_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="saves a fusemycell.io.Volume, got ndarray"):
        TiffVolumeDataset(filepath=str(tmp_path / "v.tif")).save(np.zeros((2, 2, 2)))


def test_unknown_load_args_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="unknown load_args.*lazzy"):
        TiffVolumeDataset(filepath=str(tmp_path / "v.tif"), load_args={"lazzy": True})


def test_remote_protocols_go_through_fsspec(volume):
    dataset = TiffVolumeDataset(filepath="memory://bucket/v.tif")
    dataset.save(volume)
    loaded = dataset.load()
    np.testing.assert_array_equal(loaded.data, volume.data)
    assert loaded.source.startswith("memory://") and loaded.source.endswith("v.tif")
    with pytest.raises(DatasetError, match="lazy reads need a local file"):
        TiffVolumeDataset(filepath="memory://bucket/v.tif", load_args={"lazy": True}).load()


def test_preview_is_the_maximum_projection(tmp_path, volume):
    data = np.zeros((9, 70, 50), np.uint16)
    data[5, 10:20, 30:40] = 1000  # a bright square in one plane
    path = write_volume(tmp_path / "v.tif", data, (1, 1, 1))
    png = base64.b64decode(TiffVolumeDataset(filepath=str(path)).preview())
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert image.shape == (70, 50)
    assert image[10:20, 30:40].min() == 255 and image[40:, :20].max() == 0


def test_describe_names_the_file(tmp_path):
    dataset = TiffVolumeDataset(filepath=str(tmp_path / "v.tif"))
    assert "v.tif" in str(dataset)
