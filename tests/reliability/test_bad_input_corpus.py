"""The bad-input corpus of issue #7: every broken input, at every entry point that reads it.

Every file is generated in ``tmp_path``; none is committed. For each case and entry point
the tests assert one of three behaviours:

* a clear error whose message names the file and the problem (a recognisable phrase);
* the documented skip: the file or pair is left out and named, and the good ones go on;
* that the input works (unicode and spaces in paths, huge ImageJ metadata, a description
  that is not ``key=value`` text), checked on the voxels read or predicted.

Entry points: ``read_info`` / ``read_volume`` (lazy or not); ``pair_files`` and
``FuseMyCellPairsDataset.load`` (file names); the preprocessing pipeline's nodes
``scan_raw_volumes`` -> ``validate_raw_pairs`` -> ``select_valid_pairs``; inference with
``predict_file`` and the inference pipeline's ``plan_predictions`` -> output dataset
(``TiffFolderDataset``, where predictions are computed, and which fails naming every bad input).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from kedro.io.core import DatasetError

from fusemycell.datasets import FuseMyCellPairsDataset, TiffFolderDataset
from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.pairs import pair_files
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError, VolumeInfo
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import PatchingConfig
from fusemycell.pipelines.inference.nodes import plan_predictions
from fusemycell.pipelines.preprocessing.nodes import scan_raw_volumes, select_valid_pairs, validate_raw_pairs
from fusemycell.preprocessing.config import PreprocessingConfig

SHAPE = (8, 32, 32)
SPACING = (2.0, 0.5, 0.5)
PREPROCESSING = PreprocessingConfig(workers=1)
PATCHING = PatchingConfig(patch_size_zyx=(8, 16, 16))
INFERENCE = {"device": "cpu", "amp": False, "tile_zyx": [8, 16, 16]}
HUGE_NOTE = 4 << 20  # characters of one ImageJ metadata value: a 4 MB ImageDescription
UNICODE_FOLDER = "données été 測試/sous dossier"  # accents, CJK and spaces: must work everywhere


# --- writing the corpus ------------------------------------------------------------------------


def _specimen(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """uint16 background noise around a bright block: a plausible, non-constant volume."""
    data = np.random.default_rng(seed).integers(100, 400, shape).astype(np.uint16)
    data[2:6, 8:20, 8:20] += 2000
    return data


def _save(path: Path, data: np.ndarray, spacing=SPACING, channel: str = "nucleus") -> np.ndarray:
    """A file as the challenge writes them (BigTIFF, tiles, ImageJ metadata)."""
    save_volume(path, Volume(data, spacing, {"channel": channel, "study": "corpus"}))
    return data


def _imwrite(path: Path, data: np.ndarray, **kwargs: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about nonconformant files: making them is the point
        tifffile.imwrite(path, data, **kwargs)
    return data


def _imagej(path: Path, extra: str, images: int | str = SHAPE[0], **kwargs: Any) -> np.ndarray:
    """The specimen under a hand-written ImageJ description (``extra`` appended)."""
    description = f"ImageJ=1.11a\nimages={images}\nslices={images}\nhyperstack=true\nmode=grayscale\nunit=um\n{extra}"
    return _imwrite(path, _specimen(), description=description, metadata=None, **kwargs)


_SIZES = "spacing=2.0\nPhysicalSizeX=0.5\nPhysicalSizeY=0.5\n"


def _compressed(compression: str, **kwargs: Any) -> Callable[[Path], np.ndarray]:
    """The specimen compressed as Fiji (LZW, strips) or Micro-Manager and tifffile (zstd, tiles) write it."""
    return lambda path: _imagej(path, _SIZES, compression=compression, **kwargs)


def _unsupported_codec(path: Path) -> None:
    """A file whose Compression tag names JBIG, a codec tifffile cannot decode."""
    _imagej(path, _SIZES, compression="zlib")
    with tifffile.TiffFile(path, mode="r+") as tif:
        for page in tif.pages:
            page.tags["Compression"].overwrite(34661)


_OME_SIZES = {"PhysicalSizeZ": 2000, "PhysicalSizeZUnit": "nm", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"}
_OME_SIZES["PhysicalSizeY"], _OME_SIZES["PhysicalSizeYUnit"] = 0.5, "µm"


def _ome(path: Path) -> np.ndarray:
    """An OME-TIFF (Bio-Formats, Micro-Manager): voxel sizes in the OME-XML, in nm."""
    return _imwrite(path, _specimen(), ome=True, photometric="minisblack", metadata={"axes": "ZYX", **_OME_SIZES})


def _ome_series(path: Path, thumbnail: bool) -> np.ndarray:
    """A 2D thumbnail then the volume (read: the volume), or two volumes (refused: which one is meant?)."""
    data = _specimen()
    with warnings.catch_warnings(), tifffile.TiffWriter(path, ome=True) as writer:
        warnings.simplefilter("ignore")
        first = data[0, ::4, ::4] if thumbnail else _specimen(1)
        writer.write(first, photometric="minisblack", metadata={"axes": "YX" if thumbnail else "ZYX"})
        writer.write(data, photometric="minisblack", metadata={"axes": "ZYX", **_OME_SIZES})
    return data


def _singleton_channel(path: Path) -> np.ndarray:
    """CZYX with C=1, as tifffile and napari write a one-channel stack."""
    data = _specimen()
    sizes = {"PhysicalSizeZ": 2.0, "PhysicalSizeY": 0.5, "PhysicalSizeX": 0.5}
    _imwrite(path, data[None], photometric="minisblack", metadata={"axes": "CZYX", **sizes})
    return data


def _assert_spacing_z_from_physical_size(info: VolumeInfo) -> None:
    assert info.spacing_zyx == pytest.approx(SPACING) and len(info.spacing_conflicts) == 1


def _cut(path: Path, keep: float | int) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: keep if isinstance(keep, int) else int(len(content) * keep)])


def _truncated(path: Path) -> None:
    _save(path, _specimen())
    _cut(path, 0.6)


def _truncated_contiguous(path: Path) -> None:
    _imwrite(path, _specimen(), imagej=True, metadata={"spacing": 2.0, "unit": "um"})
    _cut(path, 0.5)


def _truncated_header(path: Path) -> None:
    _save(path, _specimen())
    _cut(path, 12)


def _non_finite(path: Path) -> np.ndarray:
    data = _specimen().astype(np.float32)
    data[1, 2, 3], data[4, 5, 6] = np.nan, np.inf
    return _save(path, data)


def _huge_metadata(path: Path) -> np.ndarray:
    keys = "".join(f"key_{i}=value {i}\n" for i in range(5000))
    return _imagej(path, f"spacing=2.0\nPhysicalSizeX=0.5\nPhysicalSizeY=0.5\n{keys}notes={'n' * HUGE_NOTE}\n")


def _assert_huge_metadata_kept(info: VolumeInfo) -> None:
    assert len(info.metadata["notes"]) == HUGE_NOTE and info.metadata["key_4999"] == "value 4999"


def _assert_spacing_fallback(info: VolumeInfo) -> None:
    assert not info.spacing_found and info.spacing_zyx == (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class FileCase:
    """One broken (or awkward) file and what each entry point does with it."""

    make: Callable[[Path], np.ndarray | None]
    """Writes the file; returns the voxels a reader must give back when the file reads fine."""
    read: str | None = None
    """read_info / read_volume error phrase; None: the file reads (content checks come later)."""
    validation: str | None = None
    """Error phrase in the preprocessing validation report; None: the pair stays valid."""
    warning: str | None = None
    """Warning phrase in the validation report (the pair is kept)."""
    inference: str | None = None
    """predict_file error phrase; None: the file is predicted."""
    found_by: str = "plan"
    """Where the inference pipeline finds the problem: 'plan' (header, the file is left out) or 'save'."""
    name: str | None = None
    """File name for inference; None: a FuseMyCell angle name."""
    folder: str = ""
    """Sub-folder the file is written in."""
    check: Callable[[VolumeInfo], None] | None = None
    """More checks of a file that reads."""


def _unreadable(phrase: str, **kwargs: Any) -> FileCase:
    return FileCase(read=phrase, validation=phrase, inference=phrase, **kwargs)


FILE_CASES: dict[str, FileCase] = {
    "good": FileCase(lambda p: _save(p, _specimen())),
    "truncated": _unreadable("file truncated", make=_truncated),
    "truncated_contiguous": _unreadable("file truncated", make=_truncated_contiguous),
    "truncated_header": _unreadable("truncated or corrupt", make=_truncated_header),
    "empty_file": _unreadable("file is empty", make=lambda p: p.write_bytes(b"")),
    "not_tiff": _unreadable("not a readable TIFF file (not a TIFF", make=lambda p: p.write_text("hello\n" * 50)),
    "2d": _unreadable("is 2D", make=lambda p: _imwrite(p, _specimen()[0], photometric="minisblack")),
    "4d": _unreadable("is 4D", make=lambda p: _imwrite(p, np.stack([_specimen(), _specimen(1)], 1), imagej=True)),
    "5d": _unreadable("is 5D", make=lambda p: _imwrite(p, np.zeros((2, 2, 2, 16, 16), np.uint16), imagej=True)),
    "rgb": _unreadable(
        "3 samples per pixel (RGB", make=lambda p: _imwrite(p, np.zeros((8, 16, 16, 3), np.uint8), photometric="rgb")
    ),
    # 2 x 4 x 4 written as one 4 x 4 page of 2 samples, under an ImageJ header counting 2 images: not a cut file
    "two_samples_one_page": _unreadable(
        "2 samples per pixel (several values per pixel): one 4 x 4 image holding 2 values per pixel",
        make=lambda p: _imwrite(
            p,
            np.arange(32, dtype=np.uint16).reshape(2, 4, 4),
            photometric="minisblack",
            planarconfig="separate",
            metadata=None,
            description="ImageJ=1.11a\nimages=2\nslices=2\n",
        ),
    ),
    "bool": _unreadable("voxel type bool", make=lambda p: _imwrite(p, _specimen() > 1000, photometric="minisblack")),
    "zero_size_axis": _unreadable(
        "empty axis", make=lambda p: _imwrite(p, np.zeros((0, 32, 32), np.uint16), imagej=True)
    ),
    "float64": FileCase(
        lambda p: _save(p, _specimen().astype(np.float64)),
        validation="voxel type float64",
        inference="voxel type float64",
    ),
    "int8": FileCase(
        lambda p: _save(p, (_specimen() // 40 - 50).astype(np.int8)),
        validation="voxel type int8",
        inference="voxel type int8",
    ),
    "nan_inf": FileCase(
        _non_finite, validation="2 non-finite voxels (NaN or Inf)", inference="non-finite voxels", found_by="save"
    ),
    "constant": FileCase(
        lambda p: _save(p, np.full(SHAPE, 7, np.uint16)),
        validation="constant image (every voxel is 7)",
        inference="constant image",
        found_by="save",
    ),
    "garbage_spacing": _unreadable(
        "invalid voxel size in the metadata (physical_size_z='two um', spacing='abc')",
        make=lambda p: _imagej(p, "spacing=abc\nPhysicalSizeZ=two um\nPhysicalSizeX=0.5\nPhysicalSizeY=0.5\n"),
    ),
    "nonpositive_spacing": _unreadable(
        "invalid voxel size in the metadata (spacing=-2.0, physical_size_x=0)",
        make=lambda p: _imagej(p, "spacing=-2.0\nPhysicalSizeX=0\nPhysicalSizeY=0.5\n"),
    ),
    "imagej_layout_garbage": _unreadable("corrupt TIFF header", make=lambda p: _imagej(p, "spacing=2\n", images="abc")),
    # documented fallback: no voxel size in the file -> 1.0 um, a warning, the pair is kept
    "unparsable_description": FileCase(
        lambda p: _imwrite(p, _specimen(), description="%%garbage{{ ]] not key value text", metadata=None),
        warning="no voxel size in the file; 1.0 um assumed",
        check=_assert_spacing_fallback,
    ),
    "huge_metadata": FileCase(_huge_metadata, check=_assert_huge_metadata_kept),
    # issue #10: what microscopes write
    "compressed_lzw_strips": FileCase(_compressed("lzw", predictor=True, rowsperstrip=4)),
    "compressed_zstd_tiles": FileCase(_compressed("zstd", tile=(16, 16))),
    "compressed_unsupported_codec": _unreadable("compression JBIG (34661) cannot be decoded", make=_unsupported_codec),
    "ome": FileCase(_ome),
    "ome_thumbnail_then_volume": FileCase(lambda p: _ome_series(p, thumbnail=True)),
    "ome_two_volumes": _unreadable(
        "holds 2 3D image series (0: axes 'ZYX' shape (8, 32, 32); 1: axes 'ZYX' shape (8, 32, 32))",
        make=lambda p: _ome_series(p, thumbnail=False),
    ),
    "header_page_mismatch": _unreadable(
        "the header declares images=5, the file holds 8 pages", make=lambda p: _imagej(p, _SIZES, images=5)
    ),
    "singleton_channel_axis": FileCase(_singleton_channel),
    "extra_channel_axis": _unreadable(
        "extra axes C=2",
        make=lambda p: _imwrite(p, np.stack([_specimen(), _specimen(1)]), metadata={"axes": "CZYX"}),
    ),
    # documented precedence: PhysicalSizeZ before spacing; the file is read, the validation warns
    "conflicting_sizes": FileCase(
        lambda p: _imagej(p, "spacing=3\nPhysicalSizeZ=2\nPhysicalSizeX=0.5\nPhysicalSizeY=0.5\n"),
        warning="conflicting voxel-size sources disagree along z: PhysicalSizeZ=2 gives 2 um, spacing=3 gives 3 um",
        check=_assert_spacing_z_from_physical_size,
    ),
    # inference does not interpret names: any .tif in the folder is a single view
    "unknown_channel_name": FileCase(lambda p: _save(p, _specimen()), name="image_1_actin_angle.tif"),
    "unicode_path": FileCase(lambda p: _save(p, _specimen()), name="vue unique été 測試.tif", folder=UNICODE_FOLDER),
}
# naming cases are pair cases (below); in FILE_CASES they only serve read and inference
_NAMING_ONLY = {"unknown_channel_name"}


def _place(folder: Path, case: FileCase, default_name: str = "image_1_nucleus_angle.tif") -> Path:
    path = folder / case.folder / (case.name or default_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _assert_names(message: str, path: Path, phrase: str) -> None:
    """The message names the file (on a line that also states the problem)."""
    lines = [line for line in message.splitlines() if path.name in line]
    assert lines, f"{path.name} not named in:\n{message}"
    assert any(phrase in line for line in lines), f"{phrase!r} not said about {path.name} in:\n{message}"


# --- pairs for the raw-pairs dataset and the preprocessing validation ---------------------------


@dataclass(frozen=True)
class PairCase:
    """An angle/fused pair with a problem, as the preprocessing pipeline sees it."""

    write: Callable[[Path, int, str], list[Path]]
    """Writes pair ``image_{id}`` into a folder (broken file on ``side``); returns the files the report must name."""
    validation: str | None
    warning: str | None = None
    channel: str = "nucleus"
    listing: str = "pair"
    """How the raw-pairs dataset lists it: 'pair', 'unmatched' (bad name) or 'duplicate'."""


def _file_pair(case: FileCase) -> Callable[[Path, int, str], list[Path]]:
    def write(folder: Path, image_id: int, side: str) -> list[Path]:
        other = "fused" if side == "angle" else "angle"
        broken = folder / case.folder / f"image_{image_id}_nucleus_{side}.tif"
        broken.parent.mkdir(parents=True, exist_ok=True)
        case.make(broken)
        _save(broken.parent / f"image_{image_id}_nucleus_{other}.tif", _specimen(image_id))
        return [broken]

    return write


def _good_pair(folder: Path, image_id: int, channel: str = "nucleus", *, fused_shape=SHAPE, fused_spacing=SPACING):
    _save(folder / f"image_{image_id}_{channel}_angle.tif", _specimen(image_id), channel=channel)
    _save(folder / f"image_{image_id}_{channel}_fused.tif", _specimen(image_id, fused_shape), fused_spacing, channel)
    return [folder / f"image_{image_id}_{channel}_{kind}.tif" for kind in ("angle", "fused")]


def _duplicates(folder: Path, image_id: int, side: str) -> list[Path]:
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        _save(folder / sub / f"image_{image_id}_nucleus_angle.tif", _specimen(image_id))
    _save(folder / "a" / f"image_{image_id}_nucleus_fused.tif", _specimen(image_id))
    return [folder / sub / f"image_{image_id}_nucleus_angle.tif" for sub in ("a", "b")]


PAIR_CASES: dict[str, PairCase] = {
    **{
        name: PairCase(_file_pair(case), case.validation, case.warning)
        for name, case in FILE_CASES.items()
        if name not in _NAMING_ONLY
    },
    "shape_mismatch": PairCase(
        lambda f, i, s: _good_pair(f, i, fused_shape=(8, 32, 24))[1:],
        "angle shape (8, 32, 32) and fused shape (8, 32, 24) differ",
    ),
    "spacing_mismatch": PairCase(
        lambda f, i, s: _good_pair(f, i, fused_spacing=(3.0, 0.5, 0.5))[1:],
        None,
        warning="voxel sizes disagree: angle 2x0.5x0.5 um, fused 3x0.5x0.5 um",
    ),
    "unknown_channel": PairCase(
        lambda f, i, s: _good_pair(f, i, "actin"), "unknown channel 'actin'", channel="actin", listing="unmatched"
    ),
    "duplicate_ids": PairCase(_duplicates, "duplicate id: 2 files are image_", listing="duplicate"),
}


def _run_validation(raw: Path) -> dict[str, Any]:
    """What the preprocessing pipeline runs: the raw-pairs dataset, the fingerprint scan, the validation."""
    listing = FuseMyCellPairsDataset(path=raw).load()
    scans = scan_raw_volumes(listing, PREPROCESSING)
    return validate_raw_pairs(listing, scans, PREPROCESSING, PATCHING)


# --- 1. raw pairs: read_info / read_volume, pair_files, FuseMyCellPairsDataset ------------------


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_read_info_and_read_volume(tmp_path, name):
    case = FILE_CASES[name]
    path = _place(tmp_path, case)
    expected = case.make(path)
    readers = {
        "read_info": read_info,
        "read_volume": read_volume,
        "read_volume(lazy)": lambda p: read_volume(p, lazy=True).data[:],
    }
    if case.read is not None:
        for reader, read in readers.items():
            with pytest.raises(VolumeFormatError) as raised:
                read(path)
            _assert_names(f"{reader}: {raised.value}", path, case.read)
        return
    # read as it is: type and content problems are for the validation and inference to judge
    info = read_info(path)
    assert info.shape == expected.shape and info.dtype == expected.dtype
    np.testing.assert_array_equal(read_volume(path).data, expected)  # NaN where NaN was written
    np.testing.assert_array_equal(read_volume(path, lazy=True).data[2:5], expected[2:5])
    if case.check is not None:
        case.check(info)
    else:
        assert info.spacing_found and info.spacing_zyx == pytest.approx(SPACING)


@pytest.mark.parametrize("name", list(PAIR_CASES))
def test_pair_files_and_the_raw_pairs_dataset(tmp_path, name, caplog):
    """Both read names only: bad names are left out and named, content problems wait for the validation."""
    case = PAIR_CASES[name]
    raw = tmp_path / "raw"
    _good_pair(raw, 0)
    named = case.write(raw, 1, "angle")
    key = f"image_1_{case.channel}"
    files = sorted(p for p in raw.rglob("*.tif"))
    for listing in (pair_files(files, root=raw), FuseMyCellPairsDataset(path=raw).load()):
        assert listing["image_0_nucleus"].is_complete
        if case.listing == "pair":
            assert key in listing and listing[key].is_complete
            assert named[0] in {Path(listing[key].angle), Path(listing[key].fused)}
        elif case.listing == "unmatched":
            assert key not in listing and len(listing.unmatched) == 2
            for path in named:
                _assert_names("\n".join(listing.unmatched), path, case.validation)
        else:
            assert key not in listing and set(listing.duplicates) == {f"{key}_angle"}
            assert set(listing.duplicates[f"{key}_angle"]) == {str(p) for p in named}
    if case.listing != "pair":  # and the warning in the log names the files
        for path in named:
            assert path.name in caplog.text


def test_a_folder_of_bad_names_only_is_a_dataset_error_naming_them(tmp_path):
    _good_pair(tmp_path, 3, "actin")
    with pytest.raises(DatasetError) as raised:
        FuseMyCellPairsDataset(path=tmp_path).load()
    for kind in ("angle", "fused"):
        _assert_names(str(raised.value), Path(f"image_3_actin_{kind}.tif"), "unknown channel 'actin'")


# --- 2. preprocessing: scan -> validation -> on_invalid policy ----------------------------------


@pytest.mark.parametrize("name", list(PAIR_CASES))
def test_preprocessing_validation_and_policy(tmp_path, name):
    case = PAIR_CASES[name]
    raw = tmp_path / "raw"
    _good_pair(raw, 0)
    named = case.write(raw, 1, "angle")
    key = f"image_1_{case.channel}"
    report = _run_validation(raw)
    mine = [p for p in report["problems"] if p["pair"] == key]
    assert not [p for p in report["problems"] if p["pair"] == "image_0_nucleus" and p["severity"] == "error"]

    if case.validation is None:
        assert report["valid_pairs"] == ["image_0_nucleus", key] and report["invalid_pairs"] == []
        assert not [p for p in mine if p["severity"] == "error"]
        warnings_ = "\n".join(f"{p['problem']} ({p['file']})" for p in mine if p["severity"] == "warning")
        if case.warning is not None:
            _assert_names(warnings_, named[0], case.warning)
        else:
            assert warnings_ == ""
        for policy in ("skip", "fail"):  # warnings never stop a run
            assert select_valid_pairs(report, PreprocessingConfig(on_invalid=policy)) == ["image_0_nucleus", key]
        return

    assert report["valid_pairs"] == ["image_0_nucleus"] and report["invalid_pairs"] == [key]
    errors = "\n".join(f"{p['problem']} ({p['file']})" for p in mine if p["severity"] == "error")
    for path in named:
        _assert_names(errors, path, case.validation)
    assert select_valid_pairs(report, PreprocessingConfig(on_invalid="skip")) == ["image_0_nucleus"]
    with pytest.raises(ValueError) as raised:
        select_valid_pairs(report, PreprocessingConfig(on_invalid="fail"))
    for path in named:
        _assert_names(str(raised.value), path, case.validation)
    assert "on_invalid: skip" in str(raised.value)


def test_the_whole_corpus_in_one_folder_through_preprocessing(tmp_path):
    """Every broken pair next to two good ones: one run finds every problem, skip keeps exactly the usable pairs."""
    raw = tmp_path / "raw"
    _good_pair(raw, 0, "nucleus")
    _good_pair(raw, 1, "membrane")
    usable = {"image_0_nucleus", "image_1_membrane"}
    broken: dict[str, tuple[list[Path], str]] = {}
    ids = itertools.count(2)
    for index, case in enumerate(c for n, c in PAIR_CASES.items() if n != "good"):
        image_id = next(ids)
        named = case.write(raw, image_id, ("angle", "fused")[index % 2])  # broken angles and broken targets
        key = f"image_{image_id}_{case.channel}"
        if case.validation is None:
            usable.add(key)  # warnings only (documented fallbacks) or awkward but fine
        else:
            broken[key] = (named, case.validation)
    assert len(broken) >= 20

    report = _run_validation(raw)
    assert set(report["valid_pairs"]) == usable
    assert set(report["invalid_pairs"]) == set(broken)
    assert select_valid_pairs(report, PreprocessingConfig(on_invalid="skip")) == sorted(usable)

    with pytest.raises(ValueError) as raised:
        select_valid_pairs(report, PreprocessingConfig(on_invalid="fail"))
    message = str(raised.value)
    assert f"problem(s) in {len(broken)} pair(s)" in message
    for named, phrase in broken.values():
        for path in named:
            _assert_names(message, path, phrase)
    for key in usable:
        assert f"- {key}:" not in message


# --- 3. inference: predict_file and the inference pipeline's nodes --------------------------------


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    """A tiny untrained U-Net: enough to run the whole prediction chain."""
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=2, spacing_zyx=SPACING)
    return TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))


def _assert_predicted(source: Path, output: Path) -> None:
    prediction, original = read_volume(output), read_volume(source)
    assert prediction.data.dtype == np.uint16 and prediction.shape == original.shape
    assert prediction.spacing_zyx == original.spacing_zyx
    # all kept (an assumed spacing is added); voxel-size keys are rewritten from the size used, so they agree
    sizes = {"spacing", "unit", "physical_size_x", "physical_size_y", "physical_size_z"}
    kept = {key: value for key, value in original.metadata.items() if key not in sizes}
    assert kept.items() <= prediction.metadata.items()
    assert read_info(output).spacing_conflicts == ()
    assert prediction.data.max() > prediction.data.min()  # a prediction, not a blank frame


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_predict_file(tmp_path, name, model):
    case = FILE_CASES[name]
    path = _place(tmp_path / "in", case)
    case.make(path)
    settings = InferenceSettings(**INFERENCE)
    backend = make_backend(model, settings)
    if case.inference is not None:
        with pytest.raises(VolumeFormatError) as raised:
            predict_file(str(path), backend, settings, model.card)
        _assert_names(str(raised.value), path, case.inference)
        return
    volume = predict_file(str(path), backend, settings, model.card)
    output = save_volume(tmp_path / "out" / case.folder / path.name, volume)
    _assert_predicted(path, output)


def _inference_params(inputs: Path, outputs: Path) -> InferenceSettings:
    return InferenceSettings(**INFERENCE, input_dir=str(inputs), output_dir=str(outputs))


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_inference_pipeline_nodes(tmp_path, name, model):
    """A bad input is named (plan report, or the output dataset's error); the good one is still predicted."""
    case = FILE_CASES[name]
    inputs, outputs = tmp_path / "in" / case.folder, tmp_path / "out"  # the inputs' folder is flat
    inputs.mkdir(parents=True)
    path = inputs / (case.name or "image_1_nucleus_angle.tif")
    case.make(path)
    good = inputs / "image_0_nucleus_angle.tif"
    _save(good, _specimen())
    _save(inputs / "image_0_nucleus_fused.tif", _specimen())  # a target, not an input: skipped

    planned = plan_predictions(TiffFolderDataset(path=inputs).load(), model, _inference_params(inputs, outputs), "")
    report = planned.report
    assert report["skipped_fused"] == ["image_0_nucleus_fused.tif"]
    output_dataset = TiffFolderDataset(path=outputs)
    if case.inference is None:
        assert sorted(planned) == sorted([good.name, path.name]) and report["failures"] == []
        output_dataset.save(planned)
        _assert_predicted(path, outputs / path.name)
    elif case.found_by == "plan":  # the documented skip: left out, named in the report; the save then fails
        assert list(planned) == [good.name]
        assert [f["file"] for f in report["failures"]] == [path.name]
        _assert_names(report["failures"][0]["problem"], path, case.inference)
        with pytest.raises(DatasetError) as raised:
            output_dataset.save(planned)
        _assert_names(str(raised.value), path, case.inference)
        assert "1 volume(s) could not be predicted or written (1 written)" in str(raised.value)
    else:  # found while its voxels are read: the others are written, then the save fails naming it
        assert sorted(planned) == sorted([good.name, path.name])
        with pytest.raises(DatasetError) as raised:
            output_dataset.save(planned)
        _assert_names(str(raised.value), path, case.inference)
        assert "1 volume(s) could not be predicted or written (1 written)" in str(raised.value)
    _assert_predicted(good, outputs / good.name)
    assert sorted(p.name for p in outputs.iterdir()) == sorted(
        {good.name} | ({path.name} if case.inference is None else set())
    )  # no partial file for the bad input


def test_the_whole_corpus_in_one_folder_through_inference(tmp_path, model):
    """Every file case in one input folder (unicode and spaces in its name): every good file is predicted."""
    inputs, outputs = tmp_path / "entrées été 測試", tmp_path / "sorties 測試"
    inputs.mkdir()
    expected: dict[str, set[str]] = {"predicted": set(), "plan": set(), "save": set()}
    phrases: dict[str, str] = {}
    for image_id, case in enumerate(FILE_CASES.values(), start=1):
        path = inputs / (case.name or f"image_{image_id}_nucleus_angle.tif")
        case.make(path)
        expected["predicted" if case.inference is None else case.found_by].add(path.name)
        phrases[path.name] = case.inference or ""
    _save(inputs / "image_0_nucleus_angle.tif", _specimen())
    _save(inputs / "image_0_nucleus_fused.tif", _specimen())
    expected["predicted"].add("image_0_nucleus_angle.tif")
    assert len(expected["plan"]) >= 15 and expected["save"] and len(expected["predicted"]) >= 5

    planned = plan_predictions(TiffFolderDataset(path=inputs).load(), model, _inference_params(inputs, outputs), "")
    assert set(planned) == expected["predicted"] | expected["save"]
    assert {f["file"] for f in planned.report["failures"]} == expected["plan"]
    assert planned.report["skipped_fused"] == ["image_0_nucleus_fused.tif"]

    with pytest.raises(DatasetError) as raised:  # as the Kedro run saves the node's output
        TiffFolderDataset(path=outputs).save(planned)
    message = str(raised.value)
    failed = len(expected["plan"]) + len(expected["save"])
    assert f"{failed} volume(s) could not be predicted or written ({len(expected['predicted'])} written)" in message
    for name in expected["save"] | expected["plan"]:
        _assert_names(message, Path(name), phrases[name])
    assert sorted(p.name for p in outputs.iterdir()) == sorted(expected["predicted"])
    for name in expected["predicted"]:
        _assert_predicted(inputs / name, outputs / name)
