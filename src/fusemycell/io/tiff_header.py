"""What a TIFF holds, from its header: shape, voxel type, voxel size, metadata, and every way it can be damaged.

:func:`read_tiff_info` reads no voxel (beyond one small segment of a compressed file, so that a
codec that cannot be read is found before any heavy work). It handles every TIFF a microscope
writes: compressed files (every codec tifffile decodes through imagecodecs), OME-TIFF voxel sizes
and series, singleton axes, the many spellings of ImageJ metadata. Every problem raises
:class:`~fusemycell.io.volume.VolumeFormatError` naming the file and the problem, never a traceback
from deep inside tifffile.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from fusemycell.io.metadata import (
    SPACING_SPELLINGS,
    OmeImage,
    as_positive_float,
    canonical_key,
    normalize_metadata,
    ome_images,
    unit_scale_to_micrometre,
)
from fusemycell.io.volume import VolumeFormatError, VolumeInfo
from fusemycell.io.volume import format_error as _fail

logger = logging.getLogger(__name__)

# Keys ImageJ itself owns in the description; they describe the file, not the sample.
IMAGEJ_LAYOUT_KEYS = {
    "imagej",
    "images",
    "slices",
    "frames",
    "channels",
    "hyperstack",
    "mode",
    "loop",
    "min",
    "max",
    "shape",
}
SPACING_KEYS = {"physical_size_x", "physical_size_y", "physical_size_z", "spacing", "unit"}
_RESOLUTION_UNIT_TO_MICROMETRE = {3: 1e4, 4: 1e3, 5: 1.0}  # centimetre, millimetre, micrometre
_TIFF_MAGIC = {b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"}  # classic and BigTIFF, both byte orders

#: Order in which voxel-size sources are taken, per axis; a later source is used only when the
#: earlier ones are absent, and a later one that disagrees is reported (see :func:`read_info`).
SPACING_PRECEDENCE = (
    "OME-XML PhysicalSize{X,Y,Z} (with its unit)",
    "PhysicalSize{X,Y,Z} keys of the description, any spelling (with `unit`)",
    "ImageJ `spacing` (z) and the TIFF resolution tags (y, x)",
)

#: Relative difference above which two voxel-size sources are said to disagree.
SPACING_CONFLICT_TOLERANCE = 0.01


def open_tiff(path: str | os.PathLike) -> tifffile.TiffFile:
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file not found")
    if path.is_dir():
        raise _fail(path, "is a folder, expected a TIFF file")
    if path.stat().st_size == 0:
        raise _fail(path, "file is empty (0 bytes)")
    try:
        return tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError, struct.error) as exc:  # struct.error: truncated header
        detail = str(exc) if isinstance(exc, tifffile.TiffFileError) else f"{type(exc).__name__}: {exc}"
        damage = ", truncated or corrupt" if _starts_as_tiff(path) else ""
        raise _fail(path, f"not a readable TIFF file{damage} ({detail})") from exc


def _starts_as_tiff(path: Path) -> bool:
    """True when the file begins with a TIFF signature (so a failure to parse it is damage)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _raw_metadata(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> dict[str, Any]:
    """Metadata of the series read, from whichever flavour the file uses: ImageJ, tifffile-shaped, or ``key=value``.

    An OME-TIFF's description is the OME-XML document: its voxel sizes are read by
    :func:`_ome_sources`, its text is not taken for ``key=value`` lines.
    """
    raw: dict[str, Any] = {}
    # tifffile gives one metadata dict per shaped series that has a description, in series order
    shaped = [s for s in tif.series if s.kind == "shaped" and s.keyframe.shaped_description is not None]
    if tif.is_imagej and tif.imagej_metadata:
        raw.update(tif.imagej_metadata)
    elif any(s is series for s in shaped) and tif.shaped_metadata:
        raw.update(tif.shaped_metadata[[id(s) for s in shaped].index(id(series))])
    elif not tif.is_ome:
        description = series.keyframe.description or ""
        for line in description.splitlines():
            if "=" in line:
                key, _, value = line.partition("=")
                raw[key.strip()] = _parse_scalar(value.strip())
    return raw


def _parse_scalar(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _resolution_sizes_um(page: tifffile.TiffPage, unit_scale: float | None) -> tuple[float | None, float | None]:
    """Pixel size (y, x) in micrometres from the TIFF resolution tags, if they mean one."""
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None, None
    unit_tag = tags.get("ResolutionUnit")
    unit_code = int(unit_tag.value) if unit_tag is not None else 2
    if unit_code == 1:  # ImageJ: no unit in the tag, the unit is in the description
        scale = unit_scale if unit_scale is not None else 1.0
    elif unit_code in _RESOLUTION_UNIT_TO_MICROMETRE:
        scale = _RESOLUTION_UNIT_TO_MICROMETRE[unit_code]
    else:  # inches: a print resolution (72 dpi), never a voxel size
        return None, None
    sizes = []
    for name in ("YResolution", "XResolution"):
        numerator, denominator = tags[name].value
        pixels_per_unit = numerator / denominator if denominator else 0
        # writers store (1, 1) when no calibration was given: no information (and 1.0 is the fallback anyway)
        uncalibrated = numerator == denominator
        size = as_positive_float(scale / pixels_per_unit) if pixels_per_unit > 0 and not uncalibrated else None
        sizes.append(size)
    return sizes[0], sizes[1]


@dataclass(frozen=True)
class _SizeSource:
    """One place a voxel size can come from: its label for messages, the value as written, in um."""

    label: str
    written: Any
    um: float | None
    key: str | None = None  # canonical description key, for the "invalid voxel size" message


def _ome_image(tif: tifffile.TiffFile, series_index: int) -> OmeImage | None:
    """The OME-XML ``Image`` of the series read: by position when every image is a series, else by name."""
    if not tif.is_ome:
        return None
    images = ome_images(tif.ome_metadata)
    if len(images) == len(tif.series):
        return images[series_index]
    name = tif.series[series_index].name
    named = [image for image in images if image.name == name]
    return named[0] if len(named) == 1 else None


def _ome_sources(path: Any, image: OmeImage | None) -> dict[str, list[_SizeSource]]:
    sources: dict[str, list[_SizeSource]] = {"z": [], "y": [], "x": []}
    for axis, (written, unit) in (image.sizes if image is not None else {}).items():
        scale = unit_scale_to_micrometre(unit)
        if scale is None:
            logger.warning("%s: unknown OME-XML unit %r for PhysicalSize%s, taken as um", path, unit, axis.upper())
            scale = 1.0
        value = as_positive_float(written)
        label = f"OME-XML PhysicalSize{axis.upper()}={written} {unit}"
        sources[axis].append(_SizeSource(label, written, value * scale if value is not None else None))
    return sources


def _resolve_spacing(
    path: Any, raw: dict[str, Any], metadata: dict[str, Any], page: tifffile.TiffPage, ome: OmeImage | None
) -> tuple[tuple[float, float, float], bool, tuple[str, ...]]:
    """Voxel size (z, y, x) in micrometres, whether every axis was found, and the sources that disagree.

    Per axis the first valid source of :data:`SPACING_PRECEDENCE` is used; a later source whose
    value differs by more than :data:`SPACING_CONFLICT_TOLERANCE` is reported in a warning
    naming both values. An axis with no valid source but a written, invalid one is an error.
    """
    sources = _size_sources(path, raw, metadata, page, ome)
    chosen: dict[str, float | None] = {}
    conflicts: list[str] = []
    invalid: list[str] = []
    for axis in "zyx":
        chosen[axis], conflict, unreadable = _choose_size(axis, sources[axis])
        conflicts += [conflict] if conflict else []
        invalid += unreadable
    if invalid:
        raise _fail(path, f"invalid voxel size in the metadata ({', '.join(invalid)}); expected positive numbers")
    for conflict in conflicts:
        logger.warning("%s: %s (precedence: %s)", path, conflict, "; then ".join(SPACING_PRECEDENCE).replace("`", ""))
    z, y, x = chosen["z"], chosen["y"], chosen["x"]
    y = y or x
    x = x or y
    missing = [name for name, value in zip("zyx", (z, y, x)) if value is None]
    if missing:
        logger.warning(
            "%s: no voxel size found for axis %s (OME-XML, metadata or resolution tags); using 1.0 um",
            path,
            ", ".join(missing),
        )
    values = tuple(float(v) if v is not None else 1.0 for v in (z, y, x))
    return values, not missing, tuple(conflicts)  # type: ignore[return-value]


def _size_sources(
    path: Any, raw: dict[str, Any], metadata: dict[str, Any], page: tifffile.TiffPage, ome: OmeImage | None
) -> dict[str, list[_SizeSource]]:
    """Every voxel size the file writes, per axis, in the order of :data:`SPACING_PRECEDENCE`."""
    unit = metadata.get("unit")
    unit_scale = unit_scale_to_micrometre(unit)
    if unit_scale is None:
        logger.warning("%s: unknown unit %r, voxel sizes taken as micrometres", path, unit)
        unit_scale = 1.0
    sources = _ome_sources(path, ome)
    for key, written in raw.items():  # every spelling written, in the file's order
        canonical = canonical_key(key)
        if canonical.startswith("physical_size_"):
            value = as_positive_float(written)
            label = f"{key}={written}"
            um = value * unit_scale if value is not None else None
            sources[canonical[-1]].append(_SizeSource(label, written, um, canonical))
    spacing = as_positive_float(metadata.get("spacing"))
    if metadata.get("spacing") not in (None, ""):
        label = f"spacing={metadata['spacing']}"
        um = spacing * unit_scale if spacing is not None else None
        sources["z"].append(_SizeSource(label, metadata["spacing"], um, "spacing"))
    res_y, res_x = _resolution_sizes_um(page, unit_scale)
    for axis, value in (("y", res_y), ("x", res_x)):
        if value is not None:
            sources[axis].append(_SizeSource(f"the {axis.upper()}Resolution tag", None, value))
    return sources


def _choose_size(axis: str, sources: list[_SizeSource]) -> tuple[float | None, str | None, list[str]]:
    """The size along ``axis`` (the first valid source's), the line saying which sources disagree with it,
    and the written sizes that are not positive numbers (when no source is valid)."""
    valid = [source for source in sources if source.um is not None]
    if not valid:
        # a voxel size that is written but is not a positive number is damage, not an absent calibration
        return (
            None,
            None,
            [f"{s.key}={s.written!r}" if s.key else s.label for s in sources if s.written not in (None, "")],
        )
    first = valid[0]
    others = [s for s in valid[1:] if abs(s.um - first.um) > SPACING_CONFLICT_TOLERANCE * max(s.um, first.um)]
    if not others:
        return first.um, None, []
    conflict = (
        f"voxel-size sources disagree along {axis}: "
        + ", ".join(f"{s.label} gives {s.um:g} um" for s in (first, *others))
        + f"; {first.um:g} um ({first.label}) is used"
    )
    return first.um, conflict, []


def _squeezed(series: tifffile.TiffPageSeries) -> tuple[tuple[int, ...], str]:
    """Shape and axes of a series with its singleton non-spatial axes dropped (C=1, T=1, ...).

    Only axes other than Z, Y and X are dropped, and only while more than three remain, so a
    one-plane ZYX volume stays 3D. tifffile already squeezes ImageJ and OME series; a
    tifffile-shaped ``CZYX`` file keeps its ``C=1`` until here.
    """
    shape, axes = [int(n) for n in series.shape], list(series.axes)
    for index in reversed(range(len(shape))):
        if len(shape) > 3 and shape[index] == 1 and axes[index] not in "ZYX":
            del shape[index], axes[index]
    return tuple(shape), "".join(axes)


def _describe_series(tif: tifffile.TiffFile) -> str:
    return "; ".join(f"{index}: axes {s.axes!r} shape {tuple(s.shape)}" for index, s in enumerate(tif.series))


def _choose_series(path: Any, tif: tifffile.TiffFile) -> int:
    """Index of the series holding the volume: the only one that is 3D once its singleton axes are dropped.

    A multi-series file (OME-TIFF with a 2D thumbnail or overview, say) is read from its one 3D
    series; with several 3D series, which one is the volume cannot be told and the file is refused.
    """
    if not tif.series:
        raise _fail(path, "TIFF holds no image")
    if len(tif.series) == 1:
        return 0
    candidates = [
        index
        for index, series in enumerate(tif.series)
        if len(_squeezed(series)[0]) == 3 and "S" not in _squeezed(series)[1] and 0 not in series.shape
    ]
    if len(candidates) == 1:
        index = candidates[0]
        count, listing = len(tif.series), _describe_series(tif)
        logger.info("%s: %d image series (%s); reading series %d, the only 3D one", path, count, listing, index)
        return index
    if not candidates:
        raise _fail(path, f"holds {len(tif.series)} image series and none is a 3D ZYX stack ({_describe_series(tif)})")
    raise _fail(
        path,
        f"holds {len(candidates)} 3D image series ({_describe_series(tif)}); which one is the volume "
        "cannot be told: save the one to read as a file of its own",
    )


def _validate_series(path: Any, tif: tifffile.TiffFile, index: int) -> tuple[tifffile.TiffPageSeries, tuple[int, ...]]:
    series = tif.series[index]
    page = series.keyframe
    full_shape = tuple(int(n) for n in series.shape)
    truncation = _truncation(tif, series)
    if truncation is not None:
        raise _fail(path, truncation)
    if not full_shape or any(size == 0 for size in full_shape):
        raise _fail(path, f"has an empty axis (shape {full_shape}): no voxels")
    shape, axes = _squeezed(series)
    if "S" in axes or getattr(page, "samplesperpixel", 1) > 1:
        raise _fail(path, _multi_sample(tif, page))
    if len(shape) != 3:
        extra = [f"{axis}={size}" for axis, size in zip(axes, shape) if axis not in "ZYX"]
        detail = f"; extra axes {', '.join(extra)} (singleton axes are dropped, not these)" if len(shape) > 3 else ""
        raise _fail(
            path,
            f"is {len(shape)}D with shape {shape} (axes {axes!r}){detail}; expected a 3D ZYX stack",
        )
    dtype = np.dtype(series.dtype)
    if dtype.kind not in "uif":
        raise _fail(path, f"has voxel type {dtype}; expected unsigned/signed integers or floats")
    return series, shape


def _multi_sample(tif: tifffile.TiffFile, page: Any) -> str:
    """What a file with several samples per pixel is, in words, and what is expected instead."""
    samples = getattr(page, "samplesperpixel", "?")
    kind = "RGB colour" if int(getattr(page, "photometric", 0)) == 2 else "several values per pixel"
    if len(tif.pages) == 1:
        height, width = int(page.imagelength), int(page.imagewidth)
        return (
            f"has {samples} samples per pixel ({kind}): one {height} x {width} image holding {samples} values per "
            "pixel, not a 3D stack of z-planes. Expected one grey value per voxel and one page per z-plane: if "
            "the samples are z-planes, save the volume as a stack (Fiji: File > Save As > Tiff; Python: "
            "tifffile.imwrite(path, volume, imagej=True))"
        )
    pages = len(tif.pages)
    return f"has {samples} samples per pixel ({kind}) in each of its {pages} pages; expected one grey value per voxel"


def _truncation(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries) -> str | None:
    """Why the file is shorter than its own header says (cut while copying, say), or ``None``.

    For ImageJ files the number of images the header declares must also match the pages:
    fewer pages is a cut file, more pages means the header is wrong and reading it would
    silently drop planes.
    """
    size = tif.filehandle.size
    page = series.keyframe
    ends = [int(offset) + int(count) for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if ends and max(ends) > size:
        return f"file truncated: it has {size} bytes, its first z-plane runs to byte {max(ends)}"
    declared = tif.imagej_metadata.get("images") if tif.is_imagej and tif.imagej_metadata else None
    if not isinstance(declared, int) or isinstance(declared, bool) or declared < 1:
        return None
    pages = len(tif.pages)
    if pages > declared:
        return _too_many_pages(declared, pages)
    # ImageJ's images may be one page's samples: such a file is refused as multi-sample, not as cut
    one_sample = getattr(page, "samplesperpixel", 1) == 1
    if (
        one_sample
        and pages == 1
        and declared > 1
        and not page.is_tiled
        and page.compression == 1
        and page.is_contiguous
    ):
        end = int(page.dataoffsets[0]) + declared * int(page.nbytes)  # ImageJ's: planes follow the first
        if end > size:
            return f"file truncated: it has {size} bytes, the {declared} z-planes its ImageJ header declares need {end}"
    elif one_sample and pages < declared:  # one page per plane: the missing ones were cut off
        return f"file truncated: its ImageJ header declares {declared} z-planes, only {pages} are in the file"
    return None


def _too_many_pages(declared: int, pages: int) -> str:
    return (
        f"ImageJ header and pages disagree: the header declares images={declared}, the file holds "
        f"{pages} pages (reading it would drop {pages - declared} planes); rewrite the header or the file"
    )


def compression_name(page: Any) -> str:
    """Name of a page's compression as tifffile knows it (``NONE``, ``LZW``, ``ZSTD``, ...), else its code."""
    try:
        return tifffile.COMPRESSION(int(page.compression)).name
    except (ValueError, TypeError):
        return str(page.compression)


def _codec_label(page: Any) -> str:
    code = int(page.compression)
    name = compression_name(page)
    return f"{name} ({code})" if name != str(code) else f"code {code} (unknown to tifffile)"


def _check_decodable(path: Any, tif: tifffile.TiffFile, page: Any) -> str:
    """Decode one small segment (strip or tile) of a compressed page, so that an unsupported codec or a
    missing codec library is found from the header, before any heavy work. Returns the compression's name."""
    name = compression_name(page)
    if page.compression == 1:
        return name
    label = _codec_label(page)
    counts = [int(count) for count in page.databytecounts]
    present = [index for index, count in enumerate(counts) if count > 0]
    if not present:
        return name
    index = min(present, key=counts.__getitem__)
    try:
        handle = tif.filehandle
        handle.seek(int(page.dataoffsets[index]))
        data = handle.read(counts[index])
        page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
    except ImportError as exc:  # the codec library is missing (imagecodecs, or compression.zstd)
        raise _fail(path, f"compression {label} cannot be decoded: {exc} (install imagecodecs)") from exc
    except Exception as exc:  # tifffile: "... not supported"; imagecodecs: codec errors on damaged data
        raise _fail(path, f"compression {label} cannot be decoded ({type(exc).__name__}: {exc})") from exc
    return name


def read_tiff_info(path: str | os.PathLike) -> VolumeInfo:
    """Read shape, dtype, voxel size and metadata of a TIFF volume without reading its voxels.

    The series read is the file's only 3D one (singleton axes such as C=1 dropped); a compressed
    file has one strip or tile decoded, so that a codec that cannot be read is found here.

    Raises
    ------
    VolumeFormatError
        If the file is missing, not a TIFF, truncated, not 3D, multi-sample or non-numeric,
        its ImageJ header disagrees with its pages, it holds several 3D series, or its
        compression cannot be decoded.
    """
    with open_tiff(path) as tif:
        return info_from_open(path, tif)


def info_from_open(path: Any, tif: tifffile.TiffFile) -> VolumeInfo:
    try:
        index = _choose_series(path, tif)
        series, shape = _validate_series(path, tif, index)
        raw = _raw_metadata(tif, series)
        page = series.keyframe
        ome = _ome_image(tif, index)
    except VolumeFormatError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt headers
        raise _fail(path, f"corrupt TIFF header ({type(exc).__name__}: {exc})") from exc
    compression = _check_decodable(path, tif, page)
    spelling = next((name for name in SPACING_SPELLINGS if name in raw), "PhysicalSizeX")
    metadata = {k: v for k, v in normalize_metadata(raw).items() if str(k).lower() not in IMAGEJ_LAYOUT_KEYS}
    metadata["axes"] = "ZYX"
    spacing, found, conflicts = _resolve_spacing(path, raw, metadata, page, ome)
    # read raw bytes only where they are plain voxels: uncompressed, untiled, little-endian
    mappable = not page.is_tiled and page.compression == 1 and tif.byteorder == "<"
    offset = series.dataoffset if mappable else None
    return VolumeInfo(
        path=str(path),
        shape=shape,  # type: ignore[arg-type]
        dtype=np.dtype(series.dtype),
        spacing_zyx=spacing,
        metadata=metadata,
        spacing_found=found,
        contiguous_offset=offset,
        spelling=spelling,
        series=index,
        compression=compression,
        spacing_conflicts=conflicts,
    )
