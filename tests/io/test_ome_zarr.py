"""OME-Zarr images: round trip of voxels and voxel size (NGFF 0.4 and 0.5), lazy slabs, pyramids, bad input."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import zarr

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.naming import output_name, volume_stem
from fusemycell.io.ome_zarr import LazyZarrVolume, pyramid_shapes, read_ome_zarr_info, write_ome_zarr
from fusemycell.io.volume import VolumeFormatError


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(9, 70, 45), dtype=np.uint16)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_round_trip_keeps_voxels_voxel_size_and_metadata(tmp_path, volume, version):
    path = write_ome_zarr(
        tmp_path / "image_3_nucleus_angle.ome.zarr", volume, (2.0, 0.39, 0.4), {"channel": "nucleus"}, version=version
    )
    back = read_volume(path)  # the TIFF entry point dispatches on the suffix
    np.testing.assert_array_equal(back.data, volume)
    assert back.spacing_zyx == pytest.approx((2.0, 0.39, 0.4))
    assert back.metadata == {"channel": "nucleus"}
    info = read_info(path)
    assert info.shape == volume.shape and info.dtype == np.uint16 and info.spacing_found
    group = zarr.open_group(str(path), mode="r")
    assert (group.metadata.zarr_format == 2) == (version == "0.4")
    ngff = group.attrs["ome"] if version == "0.5" else group.attrs["multiscales"][0]
    assert (ngff.get("version") or ngff["multiscales"][0].get("version", version)) == version


def test_the_pyramid_halves_y_and_x_with_matching_scales(tmp_path, volume):
    path = write_ome_zarr(tmp_path / "p.ome.zarr", volume, (2.0, 0.5, 0.5), levels=3)
    group = zarr.open_group(str(path), mode="r")
    multiscale = group.attrs["multiscales"][0]
    assert [group[d["path"]].shape for d in multiscale["datasets"]] == [(9, 70, 45), (9, 35, 23), (9, 18, 12)]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscale["datasets"]]
    assert scales == [[2.0, 0.5, 0.5], [2.0, 1.0, 1.0], [2.0, 2.0, 2.0]]
    level1 = np.asarray(group["1"][:])
    expected = volume[:, :70, :44].reshape(9, 35, 2, 22, 2).astype(np.float32).mean(axis=(2, 4))
    np.testing.assert_array_equal(level1[:, :, :22], np.rint(expected).astype(np.uint16))
    assert pyramid_shapes((5, 1000, 600)) == [(5, 1000, 600), (5, 500, 300), (5, 250, 150)]


def test_a_lazy_slab_reads_about_a_slab(tmp_path):
    volume = np.arange(64 * 256 * 256, dtype=np.uint16).reshape(64, 256, 256)  # 8 MB
    path = write_ome_zarr(tmp_path / "big.ome.zarr", volume, (1.0, 1.0, 1.0), levels=1, slab_depth=4)
    lazy = read_volume(path, lazy=True).data
    assert isinstance(lazy, LazyZarrVolume)
    slab_bytes = 4 * 256 * 256 * 2
    tracemalloc.start()
    slab = lazy[8:12]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_array_equal(slab, volume[8:12])
    assert peak < 4 * slab_bytes, f"{peak / 2**20:.1f} MB for a {slab_bytes / 2**20:.1f} MB slab of an 8 MB volume"
    np.testing.assert_array_equal(lazy[3, [1, 5], 7:9], volume[3][[1, 5]][:, 7:9])  # outer indexing, as LazyVolume


def test_writing_is_atomic_and_replaces_an_old_image_only_when_complete(tmp_path, volume):
    path = write_ome_zarr(tmp_path / "v.ome.zarr", volume, (1.0, 1.0, 1.0))

    class Failing:
        shape, dtype = volume.shape, volume.dtype

        def __getitem__(self, z):
            if z >= 4:
                raise OSError(28, "No space left on device")
            return volume[z]

    with pytest.raises(OSError, match="could not write .*v.ome.zarr"):
        write_ome_zarr(path, Failing(), (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(read_volume(path).data, volume)  # the old image, whole
    assert sorted(os.listdir(tmp_path)) == ["v.ome.zarr"]  # no temporary left


def test_ngff_units_other_than_micrometres_are_converted(tmp_path, volume):
    path = write_ome_zarr(tmp_path / "nm.ome.zarr", volume, (1.0, 1.0, 1.0), levels=1)
    attributes = path / ".zattrs"
    content = json.loads(attributes.read_text())
    for axis in content["multiscales"][0]["axes"]:
        axis["unit"] = "nanometer"
    content["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [2000.0, 390.0, 390.0]
    attributes.write_text(json.dumps(content))
    assert read_ome_zarr_info(path).spacing_zyx == pytest.approx((2.0, 0.39, 0.39))


def test_bad_stores_are_refused_naming_the_path(tmp_path, volume):
    with pytest.raises(VolumeFormatError, match="missing.ome.zarr: OME-Zarr image not found"):
        read_info(tmp_path / "missing.ome.zarr")
    plain = tmp_path / "plain.zarr"
    zarr.open_group(str(plain), mode="w").create_array("0", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(VolumeFormatError, match="plain.zarr: no OME-Zarr 'multiscales'"):
        read_info(plain)
    two_channels = tmp_path / "c2.ome.zarr"
    group = zarr.open_group(str(two_channels), mode="w", zarr_format=2)
    group.create_array("0", shape=(2, 3, 4, 5), dtype="uint16")
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n} for n in "czyx"],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1, 1]}]}],
        }
    ]
    with pytest.raises(VolumeFormatError, match=r"c2.ome.zarr: \{'c': 2\} along non-spatial axes"):
        read_info(two_channels)


def _level0_chunks(image) -> list:
    """The chunk files of the full resolution, whatever the Zarr format (``0/1.0.0`` or ``0/c/1/0/0``)."""
    metadata = {".zarray", ".zattrs", ".zgroup", "zarr.json"}
    return sorted(p for p in (image / "0").rglob("*") if p.is_file() and p.name not in metadata)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_a_missing_chunk_is_an_error_naming_the_array_and_the_chunks(tmp_path, version):
    """Zarr reads a chunk missing from the store as its fill value: a volume with zeros where data was lost."""
    volume = np.random.default_rng(1).integers(100, 4000, (12, 40, 40), dtype=np.uint16)
    image = write_ome_zarr(
        tmp_path / "image_0_nucleus_angle.ome.zarr", volume, (2.0, 0.4, 0.4), version=version, slab_depth=4
    )
    chunks = _level0_chunks(image)
    assert len(chunks) == 3  # z slabs of 4 planes
    chunks[1].unlink()
    with pytest.raises(VolumeFormatError) as raised:
        read_info(image)
    message = str(raised.value)
    assert str(image) in message and "1 of 3 chunks of array '0'" in message and "missing" in message
    assert "voxels 4-7 x 0-39 x 0-39" in message  # which planes were lost
    with pytest.raises(VolumeFormatError, match="1 of 3 chunks"):
        read_volume(image, lazy=True)
    for chunk in chunks[::2]:
        chunk.unlink()
    with pytest.raises(VolumeFormatError, match=r"no voxel data: all 3 chunks of array '0'") as raised:
        read_info(image)
    assert "constant" not in str(raised.value)


def test_chunks_of_zeros_are_written_so_that_a_missing_chunk_is_always_a_loss(tmp_path):
    volume = np.zeros((8, 20, 20), np.uint16)
    volume[4:] = 7  # the first slab holds only the fill value: zarr leaves such chunks out by default
    image = write_ome_zarr(tmp_path / "zeros.ome.zarr", volume, (1.0, 1.0, 1.0), slab_depth=4)
    assert len(_level0_chunks(image)) == 2
    np.testing.assert_array_equal(read_volume(image).data, volume)


def test_output_names_follow_the_output_format():
    assert output_name("image_3_nucleus_angle.tif", "tiff") == "image_3_nucleus_angle.tif"
    assert output_name("image_3_nucleus_angle.tif", "ome-zarr") == "image_3_nucleus_angle.ome.zarr"
    assert output_name("image_3_nucleus_angle.ome.zarr", "tiff") == "image_3_nucleus_angle.tif"
    assert volume_stem("image_1_membrane_fused.ome.zarr") == "image_1_membrane_fused"
    with pytest.raises(ValueError, match="output format 'zarr'"):
        output_name("a.tif", "zarr")
