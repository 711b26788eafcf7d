import logging
import pickle

import numpy as np
import pytest
import tifffile

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.metadata import SPACING_SPELLINGS
from fusemycell.io.tiff import LazyVolume, save_volume, write_volume
from fusemycell.io.volume import Volume, VolumeFormatError


@pytest.fixture
def volume_array():
    rng = np.random.default_rng(0)
    return rng.integers(0, 60000, size=(7, 150, 133), dtype=np.uint16)  # not multiples of the 128 tile


@pytest.mark.parametrize("spelling", sorted(SPACING_SPELLINGS))
def test_write_then_read_round_trips_voxels_spacing_and_metadata(tmp_path, volume_array, spelling):
    path = write_volume(
        tmp_path / "v.tif", volume_array, (2.0, 0.39, 0.195), {"channel": "nucleus", "study": "s2"}, spelling=spelling
    )
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.data, volume_array)
    assert volume.spacing_zyx == pytest.approx((2.0, 0.39, 0.195))
    assert volume.metadata["channel"] == "nucleus"
    assert volume.metadata["study"] == "s2"
    assert volume.spelling == spelling


def test_written_file_is_the_challenge_layout(tmp_path, volume_array):
    path = write_volume(tmp_path / "v.tif", volume_array, (2.0, 0.4, 0.25))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert tif.is_bigtiff
        assert tif.is_imagej
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (128, 128)
        assert tif.series[0].axes == "ZYX"
        x_res = page.tags["XResolution"].value
        y_res = page.tags["YResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1 / 0.25)
        assert y_res[0] / y_res[1] == pytest.approx(1 / 0.4)
        assert tif.imagej_metadata["spacing"] == pytest.approx(2.0)


def test_write_is_atomic_no_partial_file_left_on_failure(tmp_path, volume_array):
    target = tmp_path / "v.tif"
    write_volume(target, volume_array, (1, 1, 1))
    before = target.read_bytes()

    class Exploding:
        shape = volume_array.shape
        dtype = volume_array.dtype

        def __getitem__(self, z):
            if z == 3:
                raise RuntimeError("disk went away")
            return volume_array[z]

    with pytest.raises(RuntimeError, match="disk went away"):
        write_volume(target, Exploding(), (1, 1, 1))
    assert target.read_bytes() == before  # the previous artefact is intact
    assert [p.name for p in tmp_path.iterdir()] == ["v.tif"]  # no temporary file left behind


def test_write_rejects_bad_shapes_and_spacing(tmp_path):
    with pytest.raises(VolumeFormatError, match="v.tif.*3D"):
        write_volume(tmp_path / "v.tif", np.zeros((4, 4), np.uint16), (1, 1, 1))
    with pytest.raises(VolumeFormatError, match="spacing"):
        write_volume(tmp_path / "v.tif", np.zeros((2, 4, 4), np.uint16), (1, 0, 1))


@pytest.mark.parametrize(
    ("metadata", "resolution", "expected"),
    [
        ({"spacing": 3.0, "unit": "micron", "PhysicalSizeX": 0.39, "PhysicalSizeY": 0.39}, None, (3.0, 0.39, 0.39)),
        ({"physicalsizez": 1.5, "physicalsizex": 0.2, "unit": "um"}, None, (1.5, 0.2, 0.2)),
        ({"physical_size_z": 2.0, "physical_size_y": 0.3, "physical_size_x": 0.25}, None, (2.0, 0.3, 0.25)),
        ({"spacing": 2000.0, "unit": "nm", "PhysicalSizeX": 390.0}, None, (2.0, 0.39, 0.39)),
        ({"spacing": 2.5, "unit": "micron"}, (1 / 0.195, 1 / 0.195), (2.5, 0.195, 0.195)),  # resolution tags
    ],
)
def test_spacing_is_found_in_every_spelling_and_unit(tmp_path, metadata, resolution, expected):
    path = tmp_path / "v.tif"
    description = "ImageJ=1.11a\nimages=4\nslices=4\n" + "".join(f"{k}={v}\n" for k, v in metadata.items())
    kwargs = {"resolution": resolution, "resolutionunit": 1} if resolution else {}
    tifffile.imwrite(
        path, np.zeros((4, 8, 8), np.uint16), photometric="minisblack", description=description, metadata=None, **kwargs
    )
    assert read_info(path).spacing_zyx == pytest.approx(expected)


def test_tifffile_shaped_metadata_is_read(tmp_path):
    path = tmp_path / "v.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 8, 8), np.uint16),
        photometric="minisblack",
        metadata={"PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.3, "channel": "membrane"},
    )
    info = read_info(path)
    assert info.spacing_zyx == pytest.approx((2.0, 0.3, 0.3))
    assert info.metadata["channel"] == "membrane"


def test_missing_spacing_falls_back_to_one_with_a_warning_naming_the_file(tmp_path, caplog):
    path = tmp_path / "no_spacing.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    with caplog.at_level(logging.WARNING):
        info = read_info(path)
    assert info.spacing_zyx == (1.0, 1.0, 1.0)
    assert not info.spacing_found
    assert "no_spacing.tif" in caplog.text


def test_inch_resolution_is_not_taken_for_a_voxel_size(tmp_path):
    path = tmp_path / "dpi.tif"
    tifffile.imwrite(
        path, np.zeros((4, 8, 8), np.uint16), photometric="minisblack", resolution=(72, 72), resolutionunit=2
    )
    assert read_info(path).spacing_zyx == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("layout", ["tiled", "contiguous", "lzw-strips", "zstd-tiles", "deflate-bigendian-tiles"])
def test_lazy_volume_reads_the_same_voxels_as_a_full_read(tmp_path, volume_array, layout):
    path = tmp_path / "v.tif"
    if layout == "tiled":
        write_volume(path, volume_array, (1, 1, 1))
    elif layout == "contiguous":
        tifffile.imwrite(path, volume_array, imagej=True)
    elif layout == "lzw-strips":  # box reads decode only the strips they touch
        tifffile.imwrite(path, volume_array, compression="lzw", predictor=True, rowsperstrip=7)
    elif layout == "zstd-tiles":  # ... or the tiles
        tifffile.imwrite(path, volume_array, compression="zstd", tile=(32, 48), photometric="minisblack")
    else:
        tifffile.imwrite(
            path, volume_array, compression="adobe_deflate", tile=(64, 64), byteorder=">", photometric="minisblack"
        )
    lazy = read_volume(path, lazy=True).data
    assert isinstance(lazy, LazyVolume)
    assert (lazy.info.contiguous_offset is not None) == (layout == "contiguous")
    assert lazy.shape == volume_array.shape and lazy.dtype == volume_array.dtype
    keys = [
        np.s_[2:5],
        np.s_[3],
        np.s_[1:6:2, 10:40, 7],
        np.s_[..., 5:9],
        np.s_[-2:],
        np.s_[:, 100:],
        np.s_[1:3, 100:149, 50:131],
        np.s_[:, [3, 140], 5:9],
        np.s_[2, [1, 2], [3, 4, 5]],
        np.s_[4, 129, 128],
    ]
    for key in keys:
        expected = (
            volume_array[key]
            if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, list) for k in key[1:]))
            else volume_array[key[0]][key[1]][..., key[2]]
        )
        np.testing.assert_array_equal(lazy[key], expected)
    np.testing.assert_array_equal(np.asarray(lazy), volume_array)


def test_lazy_volume_survives_pickling_for_worker_processes(tmp_path, volume_array):
    path = write_volume(tmp_path / "v.tif", volume_array, (1, 1, 1))
    lazy = read_volume(path, lazy=True).data
    _ = lazy[0]  # opens a handle that must not travel
    clone = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(clone[4], volume_array[4])


def test_a_lazy_volume_can_be_written_plane_by_plane(tmp_path, volume_array):
    source = write_volume(tmp_path / "a.tif", volume_array, (2, 0.5, 0.5), {"study": "x"})
    volume = read_volume(source, lazy=True)
    copy = save_volume(tmp_path / "b.tif", volume)
    again = read_volume(copy)
    np.testing.assert_array_equal(again.data, volume_array)
    assert again.metadata["study"] == "x"


def test_rewriting_a_file_gives_the_same_description(tmp_path, volume_array):
    first = write_volume(tmp_path / "a.tif", volume_array, (2, 0.5, 0.5), {"channel": "nucleus", "study": "s"})
    second = save_volume(tmp_path / "b.tif", read_volume(first))
    descriptions = [tifffile.TiffFile(p).pages.first.description for p in (first, second)]
    assert descriptions[0] == descriptions[1]
    assert descriptions[1].count("ImageJ=") == 1


def test_save_volume_keeps_the_spelling_of_the_source(tmp_path, volume_array):
    source = write_volume(tmp_path / "a.tif", volume_array, (2, 0.5, 0.5), spelling="physical_size_x")
    copy = save_volume(tmp_path / "b.tif", read_volume(source))
    assert "physical_size_x=0.5" in tifffile.TiffFile(copy).pages.first.description
    assert read_volume(copy).spelling == "physical_size_x"


def test_volume_reports_shape_and_dtype():
    volume = Volume(data=np.zeros((2, 3, 4), np.float32))
    assert volume.shape == (2, 3, 4)
    assert volume.dtype == np.float32


def test_remove_leftovers_deletes_only_what_interrupted_writes_left(tmp_path):
    from fusemycell.io.atomic import remove_leftovers

    keep = ["image_1_nucleus_angle.tif", ".hidden_user_file", ".notes.partial", ".x.1234567.partial", ".y.zzzzzzzz.old"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    stale_file = tmp_path / ".image_1_nucleus_angle.tif.0a1b2c3d.partial"
    stale_file.write_bytes(b"half")
    stale_store = tmp_path / ".train.deadbeef.partial"
    stale_store.mkdir()
    (stale_store / "angle.npy").write_bytes(b"half")
    old_store = tmp_path / ".train.01234567.old"
    old_store.mkdir()
    other_store = tmp_path / ".val.89abcdef.partial"
    other_store.mkdir()

    assert sorted(p.name for p in remove_leftovers(tmp_path, "train")) == sorted([stale_store.name, old_store.name])
    assert other_store.exists() and stale_file.exists()  # another target's leftovers are left alone
    assert sorted(p.name for p in remove_leftovers(tmp_path)) == sorted([stale_file.name, other_store.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_leftovers(tmp_path / "missing") == []


@pytest.mark.parametrize(("compression", "name"), [(None, "NONE"), ("lzw", "LZW"), ("zstd", "ZSTD")])
def test_read_info_names_the_compression_and_maps_only_plain_files(tmp_path, compression, name):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.ones((3, 8, 8), np.uint16), photometric="minisblack", compression=compression)
    info = read_info(path)
    assert info.compression == name
    assert (info.contiguous_offset is not None) == (compression is None)


def test_read_info_reads_the_only_3d_series_of_a_multi_series_file(tmp_path, volume_array):
    path = tmp_path / "v.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(volume_array[0, :16, :16], photometric="minisblack")  # a 2D preview first
        writer.write(volume_array, photometric="minisblack", metadata={"PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.5})
    info = read_info(path)
    assert info.series == 1 and info.shape == volume_array.shape
    assert info.spacing_zyx == pytest.approx((2.0, 0.5, 0.5))  # the metadata of that series, not the preview's
    np.testing.assert_array_equal(read_volume(path).data, volume_array)
    np.testing.assert_array_equal(read_volume(path, lazy=True).data[2:4, 5:90], volume_array[2:4, 5:90])


def test_the_spacing_precedence_is_ome_then_physical_size_keys_then_spacing_and_tags():
    from fusemycell.io.tiff_header import SPACING_PRECEDENCE

    assert [entry.split()[0] for entry in SPACING_PRECEDENCE] == ["OME-XML", "PhysicalSize{X,Y,Z}", "ImageJ"]
