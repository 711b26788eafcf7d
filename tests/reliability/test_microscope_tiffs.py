"""Every TIFF a microscope writes is read right (issue #10, items 7-12).

Each test reproduces one way a real acquisition or export file was misread (silently or
with a traceback) and checks what is read now: the voxels, the voxel size, or a clear
error that names the file and the problem. Files are generated in ``tmp_path``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import tomllib

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.volume import VolumeFormatError

PROJECT = Path(__file__).resolve().parents[2]
SHAPE = (14, 40, 36)


def _data(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


def _imwrite(path: Path, data: np.ndarray, **kwargs: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about nonconformant files: making them is the point
        tifffile.imwrite(path, data, **kwargs)
    return path


def _imagej_description(images: int, extra: str = "") -> str:
    return f"ImageJ=1.54f\nimages={images}\nslices={images}\nunit=micron\n{extra}"


def _readers(path: Path) -> dict[str, Any]:
    return {
        "read_info": lambda: read_info(path),
        "read_volume": lambda: read_volume(path),
        "read_volume(lazy)": lambda: read_volume(path, lazy=True).data[:],
    }


def _assert_refused(path: Path, *phrases: str) -> None:
    for reader, read in _readers(path).items():
        with pytest.raises(VolumeFormatError) as raised:
            read()
        message = str(raised.value)
        assert message.startswith(str(path)), f"{reader}: file not named first in {message!r}"
        for phrase in phrases:
            assert phrase in message, f"{reader}: {phrase!r} not in {message!r}"


def _assert_reads(path: Path, expected: np.ndarray) -> None:
    info = read_info(path)
    assert info.shape == expected.shape and info.dtype == expected.dtype
    np.testing.assert_array_equal(read_volume(path).data, expected)
    lazy = read_volume(path, lazy=True).data
    np.testing.assert_array_equal(lazy[3:7], expected[3:7])
    np.testing.assert_array_equal(lazy[5, 10:30, 4:20], expected[5, 10:30, 4:20])


# --- item 7: the ImageJ header and the pages must agree -----------------------------------------


def test_an_imagej_header_declaring_fewer_images_than_pages_is_refused_naming_both_counts(tmp_path):
    path = _imwrite(
        tmp_path / "image_1_nucleus_angle.tif",
        _data(),
        description=_imagej_description(5, "spacing=2\n"),
        metadata=None,
        photometric="minisblack",
    )
    with tifffile.TiffFile(path) as tif:  # what was read before: 5 of the 14 planes, silently
        assert tif.series[0].shape[0] == 5 and len(tif.pages) == 14
    _assert_refused(path, "images=5", "14 pages")


def test_an_imagej_header_matching_its_pages_still_reads(tmp_path):
    data = _data()
    path = _imwrite(tmp_path / "v.tif", data, description=_imagej_description(14), metadata=None)
    _assert_reads(path, data)


# --- item 8: OME-TIFF voxel sizes and series ------------------------------------------------------


def test_ome_xml_voxel_sizes_are_read_with_their_units(tmp_path, caplog):
    data = _data()
    metadata = {
        "axes": "ZYX",
        "PhysicalSizeZ": 2000.0,
        "PhysicalSizeZUnit": "nm",
        "PhysicalSizeY": 0.4,  # OME's default unit: um
        "PhysicalSizeX": 0.25,
        "PhysicalSizeXUnit": "µm",
    }
    path = _imwrite(tmp_path / "v.ome.tif", data, ome=True, metadata=metadata, photometric="minisblack")
    with caplog.at_level(logging.WARNING):
        info = read_info(path)
    assert info.spacing_found and info.spacing_zyx == pytest.approx((2.0, 0.4, 0.25))
    assert "no voxel size" not in caplog.text
    assert not any("<" in str(key) for key in info.metadata)  # the XML is not taken for key=value lines
    _assert_reads(path, data)


def test_of_an_ome_file_with_a_thumbnail_the_3d_series_is_read_with_its_own_sizes(tmp_path):
    data = _data()
    path = tmp_path / "v.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(data[0, :8, :8], photometric="minisblack", metadata={"axes": "YX", "PhysicalSizeX": 9.0})
        writer.write(
            data, photometric="minisblack", metadata={"axes": "ZYX", "PhysicalSizeZ": 3.0, "PhysicalSizeX": 0.5}
        )
    info = read_info(path)
    assert info.series == 1 and info.shape == SHAPE
    assert info.spacing_zyx == pytest.approx((3.0, 0.5, 0.5))  # Image1's sizes, not the thumbnail's
    _assert_reads(path, data)


def test_an_ome_file_with_two_3d_series_is_refused_listing_them(tmp_path):
    path = tmp_path / "v.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(_data(), photometric="minisblack", metadata={"axes": "ZYX"})
        writer.write(_data((6, 20, 20)), photometric="minisblack", metadata={"axes": "ZYX"})
    _assert_refused(path, "2 3D image series", "0: axes 'ZYX' shape (14, 40, 36)", "1: axes 'ZYX' shape (6, 20, 20)")


# --- item 9: conflicting voxel-size sources ---------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (
            "spacing=3\nPhysicalSizeZ=1\nPhysicalSizeX=0.5\n",
            {},
            (1.0, 0.5, 0.5),
            ["along z", "PhysicalSizeZ=1 gives 1 um", "spacing=3 gives 3 um", "1 um (PhysicalSizeZ=1) is used"],
        ),
        (
            "spacing=2\nPhysicalSizeX=0.5\nPhysicalSizeY=0.5\n",
            {"resolution": (1 / 0.25, 1 / 0.25), "resolutionunit": 1},
            (2.0, 0.5, 0.5),
            ["along x", "PhysicalSizeX=0.5 gives 0.5 um", "the XResolution tag gives 0.25 um"],
        ),
        (
            "spacing=2\nPhysicalSizeZ=2\nphysical_size_z=9\nPhysicalSizeX=0.5\n",
            {},
            (2.0, 0.5, 0.5),
            ["along z", "PhysicalSizeZ=2 gives 2 um", "physical_size_z=9 gives 9 um"],
        ),
    ],
    ids=["spacing-vs-PhysicalSizeZ", "description-vs-resolution-tags", "two-spellings"],
)
def test_conflicting_voxel_sizes_follow_the_precedence_and_are_reported(tmp_path, caplog, case):
    extra, kwargs, expected, phrases = case
    path = _imwrite(tmp_path / "v.tif", _data(), description=_imagej_description(14, extra), metadata=None, **kwargs)
    with caplog.at_level(logging.WARNING):
        info = read_info(path)
    assert info.spacing_zyx == pytest.approx(expected)
    assert info.spacing_conflicts  # one line per axis whose sources disagree
    for phrase in phrases:
        assert any(phrase in conflict for conflict in info.spacing_conflicts)
        assert phrase in caplog.text
    assert "v.tif" in caplog.text and "precedence" in caplog.text


def test_ome_sizes_take_precedence_over_the_resolution_tags(tmp_path, caplog):
    path = _imwrite(
        tmp_path / "v.ome.tif",
        _data(),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeZ": 2.0, "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2},
        resolution=(1 / 0.4, 1 / 0.4),
        resolutionunit="MICROMETER",
        photometric="minisblack",
    )
    with caplog.at_level(logging.WARNING):
        info = read_info(path)
    assert info.spacing_zyx == pytest.approx((2.0, 0.2, 0.2))
    assert "OME-XML PhysicalSizeX=0.2 µm gives 0.2 um" in caplog.text
    assert "the XResolution tag gives 0.4 um" in caplog.text


def test_agreeing_sources_are_not_reported(tmp_path, caplog):
    extra = "spacing=2\nPhysicalSizeZ=2.0\nPhysicalSizeX=0.39\nPhysicalSizeY=0.39\n"
    path = _imwrite(
        tmp_path / "v.tif",
        _data(),
        description=_imagej_description(14, extra),
        metadata=None,
        resolution=(1 / 0.39, 1 / 0.39),
        resolutionunit=1,
    )
    with caplog.at_level(logging.WARNING):
        info = read_info(path)
    assert info.spacing_zyx == pytest.approx((2.0, 0.39, 0.39)) and info.spacing_conflicts == ()
    assert caplog.text == ""


# --- item 10: singleton axes are dropped, real extra axes refused ----------------------------------


@pytest.mark.parametrize(
    ("axes", "shape"),
    [("CZYX", (1, *SHAPE)), ("TZYX", (1, *SHAPE)), ("TCZYX", (1, 1, *SHAPE)), ("ZCYX", (SHAPE[0], 1, *SHAPE[1:]))],
)
@pytest.mark.parametrize("flavour", ["shaped", "ome"])
def test_singleton_non_spatial_axes_are_dropped(tmp_path, axes, shape, flavour):
    data = _data()
    kwargs = {"ome": True} if flavour == "ome" else {}
    path = _imwrite(
        tmp_path / "v.tif", data.reshape(shape), metadata={"axes": axes}, photometric="minisblack", **kwargs
    )
    _assert_reads(path, data)


def test_an_imagej_hyperstack_with_one_frame_and_one_channel_reads(tmp_path):
    data = _data()
    path = _imwrite(
        tmp_path / "v.tif", data.reshape(1, SHAPE[0], 1, *SHAPE[1:]), imagej=True, metadata={"axes": "TZCYX"}
    )
    _assert_reads(path, data)


def test_a_one_plane_volume_stays_a_volume(tmp_path):
    data = _data((1, 40, 36))
    path = _imwrite(tmp_path / "v.tif", data, photometric="minisblack")
    assert read_info(path).shape == (1, 40, 36)
    np.testing.assert_array_equal(read_volume(path, lazy=True).data[:], data)


@pytest.mark.parametrize(
    ("axes", "shape", "phrases"),
    [
        ("CZYX", (2, *SHAPE), ["is 4D", "axes 'CZYX'", "extra axes C=2"]),
        ("TCZYX", (3, 1, *SHAPE), ["is 4D", "axes 'TZYX'", "extra axes T=3"]),
        ("TCZYX", (2, 3, 4, 16, 16), ["is 5D", "extra axes T=2, C=3"]),
    ],
)
def test_real_extra_axes_are_refused_naming_them_and_their_sizes(tmp_path, axes, shape, phrases):
    path = _imwrite(tmp_path / "v.tif", np.zeros(shape, np.uint16), metadata={"axes": axes}, photometric="minisblack")
    _assert_refused(path, *phrases)


# --- item 12: compressed files ------------------------------------------------------------------

#: Every compression tifffile writes here (through imagecodecs) and reads back losslessly.
COMPRESSIONS = ["lzw", "zstd", "zlib", "adobe_deflate", "lzma", "packbits", "png", "jpeg2000", "jpegxl", "lerc"]


@pytest.mark.parametrize("layout", ["strips", "tiles"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressed_files_are_read_whole_and_lazily(tmp_path, compression, layout):
    data = _data()
    kwargs: dict[str, Any] = {"tile": (16, 16)} if layout == "tiles" else {"rowsperstrip": 8}
    if compression == "lzw":
        kwargs["predictor"] = True  # Fiji and Micro-Manager write LZW with horizontal differencing
    path = _imwrite(
        tmp_path / "v.tif",
        data,
        compression=compression,
        description=_imagej_description(14, "spacing=2\n"),
        metadata=None,
        photometric="minisblack",
        **kwargs,
    )
    info = read_info(path)
    assert info.compression != "NONE" and info.contiguous_offset is None
    _assert_reads(path, data)


def test_imagecodecs_is_a_declared_dependency():
    dependencies = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dependency.split(">")[0].split("=")[0].strip() == "imagecodecs" for dependency in dependencies)


def _with_compression_tag(path: Path, code: int) -> Path:
    with tifffile.TiffFile(path, mode="r+") as tif:
        for page in tif.pages:
            page.tags["Compression"].overwrite(code)
    return path


@pytest.mark.parametrize(("code", "name"), [(34661, "JBIG (34661)"), (60001, "code 60001 (unknown to tifffile)")])
def test_a_codec_that_cannot_be_decoded_is_refused_by_read_info_naming_it(tmp_path, code, name):
    path = _imwrite(tmp_path / "v.tif", _data(), compression="zlib", photometric="minisblack")
    _with_compression_tag(path, code)
    _assert_refused(path, f"compression {name} cannot be decoded")


def test_a_missing_codec_library_is_found_by_read_info_not_when_outputs_are_written(tmp_path):
    """Without imagecodecs (and without Python's own compression.zstd), the header read says so."""
    path = _imwrite(tmp_path / "v.tif", _data(), compression="zstd", photometric="minisblack")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["imagecodecs"] = None  # as in an environment without them
        sys.modules["compression"] = None
        from fusemycell.io.formats import read_info
        from fusemycell.io.volume import VolumeFormatError
        try:
            read_info({str(path)!r})
        except VolumeFormatError as exc:
            print(exc)
        else:
            print("read")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.startswith(f"{path}: compression ZSTD (50000) cannot be decoded"), result.stdout
    assert "install imagecodecs" in result.stdout


def test_damaged_compressed_data_is_reported_naming_the_file_and_the_codec(tmp_path):
    path = _imwrite(tmp_path / "v.tif", _data(), compression="zstd", photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[9]
        offset, count = int(page.dataoffsets[0]), int(page.databytecounts[0])
    content = bytearray(path.read_bytes())
    content[offset : offset + count] = b"\x00" * count  # plane 9 only: the header read still succeeds
    path.write_bytes(bytes(content))
    lazy = read_volume(path, lazy=True).data
    np.testing.assert_array_equal(lazy[0:4], _data()[0:4])
    with pytest.raises(VolumeFormatError) as raised:
        lazy[8:12]
    message = str(raised.value)
    assert message.startswith(str(path)) and "ZSTD-compressed data damaged" in message


def test_a_slab_of_a_compressed_file_costs_about_the_slab_plus_one_plane(tmp_path):
    depth, height, width = 48, 256, 256
    data = np.random.default_rng(1).integers(0, 60000, (depth, height, width)).astype(np.uint16)
    path = _imwrite(tmp_path / "v.tif", data, compression="lzw", tile=(64, 64), photometric="minisblack")
    plane = height * width * 2
    lazy = read_volume(path, lazy=True).data
    lazy[0]  # opens the file outside the measurement
    tracemalloc.start()
    try:
        slab = lazy[10:14]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(slab, data[10:14])
    assert peak < 4 * plane + 2 * plane + (1 << 20), f"peak {peak} bytes for a 4-plane slab of {plane}-byte planes"
    assert peak < depth * plane / 4  # far from the volume


@pytest.mark.parametrize("layout", ["strips", "tiles"])
def test_a_box_of_a_compressed_file_decodes_only_the_segments_it_touches(tmp_path, layout):
    depth, height, width = 12, 1024, 1024
    data = np.random.default_rng(2).integers(0, 60000, (depth, height, width)).astype(np.uint16)
    kwargs = {"tile": (64, 64)} if layout == "tiles" else {"rowsperstrip": 16}
    path = _imwrite(tmp_path / "v.tif", data, compression="zstd", photometric="minisblack", **kwargs)
    plane = height * width * 2
    lazy = read_volume(path, lazy=True).data
    lazy[0, :2, :2]  # opens the file outside the measurement
    tracemalloc.start()
    try:
        box = lazy[4:8, 100:164, 200:264]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(box, data[4:8, 100:164, 200:264])
    assert peak < plane / 4, f"peak {peak} bytes for a 4x64x64 box of {plane}-byte planes"
