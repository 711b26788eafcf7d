"""OME-Zarr (NGFF 0.4 and 0.5) volumes: lazy chunked reads, pyramids written slab by slab, atomically.

A single view or a prediction can be an OME-Zarr image (``image_3_nucleus_angle.ome.zarr``) as
well as a TIFF. Reading takes the first multiscale's full-resolution level, its voxel size from
the ``scale`` transformations (dataset and multiscale level, in the axes' units), and reads only
the chunks a slice touches. Writing makes a pyramid that napari (napari-ome-zarr), Fiji (MoBIE,
n5-viewer) and neuroglancer open: level 0 at full resolution, then y and x halved per level
(z kept: light-sheet z is already the coarse axis), every level written from the same z-slab, so
memory holds a slab whatever the volume. The store is built under a temporary name in the target's
folder and renamed: a reader never sees half a pyramid.

The metadata is written by ome-zarr-py (the OME reference implementation of NGFF that
napari-ome-zarr itself uses), the arrays by zarr-python, so the files follow the specification
that viewers test against; iohub (VisCy's reader) targets HCS plates and positions, more than a
folder of single volumes needs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.io.atomic import could_not_write, writing_atomically
from fusemycell.io.volume import LazyArray, Volume, VolumeFormatError, VolumeInfo, expand_key
from fusemycell.io.volume import format_error as _fail

#: NGFF versions read and written.
VERSIONS = ("0.4", "0.5")
#: Micrometres per unit, for the NGFF (UDUNITS-2) space units.
UNIT_UM = {
    "micrometer": 1.0,
    "micron": 1.0,
    "um": 1.0,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "millimeter": 1e3,
    "mm": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
    "angstrom": 1e-4,
}
#: Where this project keeps the volume's own metadata (channel, study, ...) in the group's attributes.
METADATA_KEY = "fusemycell"


def _open_group(path: str | os.PathLike) -> Any:
    import zarr

    if not Path(path).is_dir():
        raise _fail(path, "OME-Zarr image not found (expected a folder)")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise _fail(path, f"not a readable Zarr group ({type(exc).__name__}: {exc})") from exc


def _multiscale(path: Any, attrs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The NGFF version and the first multiscale of a group's attributes (0.5 nests them under ``ome``)."""
    if "ome" in attrs:
        version, multiscales = str(attrs["ome"].get("version", "")), attrs["ome"].get("multiscales")
    else:
        multiscales = attrs.get("multiscales")
        version = str((multiscales or [{}])[0].get("version", "")) if multiscales else ""
    if not multiscales:
        raise _fail(path, "no OME-Zarr 'multiscales' metadata; is it an image (not a plate or a plain Zarr array)?")
    if version not in VERSIONS:
        raise _fail(path, f"OME-Zarr version {version or 'unknown'}; versions {' and '.join(VERSIONS)} are read")
    return version, multiscales[0]


def _scale(transformations: Any) -> list[float] | None:
    for transformation in transformations or []:
        if transformation.get("type") == "scale":
            return [float(s) for s in transformation["scale"]]
    return None


def read_ome_zarr_info(path: str | os.PathLike) -> VolumeInfo:
    """Shape, dtype, voxel size (um) and metadata of an OME-Zarr image's full resolution, no voxels read.

    Axes other than z, y and x (``t``, ``c``) must have length 1: one volume per image.

    Raises
    ------
    VolumeFormatError
        Naming the path: not a Zarr group, no or an unsupported multiscale, not 3D in space, several
        channels or time points, a non-numeric array.
    """
    group = _open_group(path)
    _, multiscale = _multiscale(path, group.attrs)
    array, axes, spacing, found = _full_resolution(path, group, multiscale)
    shape = tuple(int(n) for n, a in zip(array.shape, axes) if a["name"] in ("z", "y", "x"))
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "uif":
        raise _fail(path, f"voxels of type {dtype}: expected numbers")
    if any(n == 0 for n in shape):
        raise _fail(path, f"empty axis in shape {shape}")
    _require_every_chunk(path, array, str(multiscale["datasets"][0]["path"]))
    metadata = dict(group.attrs.get(METADATA_KEY, {}).get("metadata", {}))
    return VolumeInfo(
        path=str(path),
        shape=shape,  # type: ignore[arg-type]
        dtype=dtype,
        spacing_zyx=spacing,
        metadata=metadata,
        spacing_found=found,
        contiguous_offset=None,
    )


def _full_resolution(path: Any, group: Any, multiscale: dict[str, Any]) -> tuple[Any, list[dict], tuple, bool]:
    axes = [a if isinstance(a, dict) else {"name": str(a)} for a in multiscale.get("axes", [])]
    names = [a["name"] for a in axes]
    if sorted(n for n in names if n in ("z", "y", "x")) != ["x", "y", "z"] or names[-3:] != ["z", "y", "x"]:
        raise _fail(path, f"axes {names}: expected the last three to be z, y, x (a 3D image)")
    dataset = multiscale["datasets"][0]
    try:
        array = group[dataset["path"]]
    except KeyError as exc:
        raise _fail(path, f"level {dataset['path']!r} listed in the multiscales is missing") from exc
    if len(array.shape) != len(names):
        raise _fail(path, f"array of {len(array.shape)} dimensions for axes {names}")
    extra = {n: int(s) for n, s in zip(names, array.shape) if n not in ("z", "y", "x") and int(s) != 1}
    if extra:
        raise _fail(path, f"{extra} along non-spatial axes: one channel and one time point per image")
    scale = _scale(dataset.get("coordinateTransformations")) or [1.0] * len(names)
    level_scale = _scale(multiscale.get("coordinateTransformations")) or [1.0] * len(names)
    found = _scale(dataset.get("coordinateTransformations")) is not None
    spacing = []
    for axis, s, s_level in zip(axes, scale, level_scale):
        if axis["name"] in ("z", "y", "x"):
            unit = str(axis.get("unit", "micrometer")).lower()
            if unit not in UNIT_UM:
                raise _fail(path, f"unit {unit!r} of axis {axis['name']}: expected a length ({', '.join(UNIT_UM)})")
            size = s * s_level * UNIT_UM[unit]
            if not size > 0:
                raise _fail(path, f"voxel size {size} along {axis['name']}: expected a positive size")
            spacing.append(size)
    return array, axes, tuple(spacing), found


def _require_every_chunk(path: Any, array: Any, level: str) -> None:
    """Refuse an array with chunks missing from its store: zarr would read them as the fill value.

    A microscope's volume has no legitimately missing chunk: one that is absent was lost (an
    interrupted copy or write), and reading it as zeros would predict, silently, from zeros.
    Only the store's listing is read, no voxel.
    """
    total, stored = int(array.nchunks), int(array.nchunks_initialized)
    if stored >= total:
        return
    missing = _missing_chunks(array)
    where = f"array {level!r}, the full resolution"
    fill = array.fill_value
    if stored == 0:
        raise _fail(
            path,
            f"no voxel data: all {total} chunks of {where}, are missing from the store (only the metadata is "
            f"there; zarr would read every voxel as {fill}). Copy or write the image again",
        )
    listing = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    raise _fail(
        path,
        f"{total - stored} of {total} chunks of {where}, are missing from the store "
        f"({(total - stored) / total:.0%} of the chunks{': ' + listing if listing else ''}); zarr would read "
        f"them as {fill}, a silently wrong volume. The image is incomplete (an interrupted copy or write?): copy "
        "or write it again. If its writer leaves out chunks that hold only the fill value (zarr's "
        "write_empty_chunks=False), write it with write_empty_chunks=True",
    )


def _missing_chunks(array: Any) -> list[str]:
    """Keys of the chunks (shards) absent from the store, with the voxels each covers; [] if zarr cannot say."""
    try:  # zarr 3 lists the stored keys; no public call names them, so any failure only shortens the message
        from zarr.core.array import _shards_initialized
        from zarr.core.sync import sync

        stored = set(sync(_shards_initialized(array.async_array)))
        block = array.shards or array.chunks
        missing = []
        for key, coords in zip(array._iter_shard_keys(), array._iter_shard_coords(), strict=True):
            if key not in stored:
                spans = [f"{c * b}-{min((c + 1) * b, n) - 1}" for c, b, n in zip(coords, block, array.shape)]
                missing.append(f"{key} (voxels {' x '.join(spans[-3:])} of z, y, x)")
        return missing
    except Exception:  # noqa: BLE001
        return []


class LazyZarrVolume(LazyArray):
    """The full-resolution level of an OME-Zarr image as a ZYX array that reads only the chunks sliced.

    Same interface as :class:`fusemycell.io.tiff.LazyVolume` (NumPy indexing for ints and slices,
    outer indexing for lists, ``close``, picklable; the array protocol of
    :class:`~fusemycell.io.volume.LazyArray`), so every reader of single views takes either.
    """

    def __init__(self, path: str | os.PathLike, info: VolumeInfo | None = None):
        self.path = str(path)
        self.info = info or read_ome_zarr_info(path)
        self._array: Any = None
        self._spatial: tuple[Any, ...] = ()

    def close(self) -> None:
        """Forget the open array (it is reopened on the next read)."""
        self._array = None

    def _open(self) -> Any:
        if self._array is None:
            group = _open_group(self.path)
            _, multiscale = _multiscale(self.path, group.attrs)
            array, axes, _, _ = _full_resolution(self.path, group, multiscale)
            # leading singleton axes (t, c) are indexed away
            self._spatial = tuple(0 for a in axes[:-3])
            self._array = array
        return self._array

    def __getitem__(self, key: Any) -> np.ndarray:
        key = expand_key(key, self.shape)
        array = self._open()
        try:
            if all(isinstance(k, (int, np.integer, slice)) for k in key):
                return np.asarray(array[(*self._spatial, *key)])
            # lists or arrays: outer indexing, as LazyVolume does
            block = np.asarray(
                array.oindex[(*self._spatial, *(k if isinstance(k, slice) else np.atleast_1d(k) for k in key))]
            )
            squeeze = tuple(axis for axis, k in enumerate(key) if np.ndim(k) == 0 and not isinstance(k, slice))
            return block.squeeze(axis=squeeze) if squeeze else block
        except VolumeFormatError:
            raise
        except Exception as exc:  # zarr and codecs raise many types on damaged chunks
            raise _fail(self.path, f"could not read chunks ({type(exc).__name__}: {exc}); store damaged?") from exc


def read_ome_zarr(path: str | os.PathLike, *, lazy: bool = False) -> Volume:
    """Read the full resolution of an OME-Zarr image as a :class:`Volume` (lazily: chunk by chunk)."""
    info = read_ome_zarr_info(path)
    data: Any = LazyZarrVolume(path, info)
    if not lazy:
        data = data[:, :, :]
    return Volume(data=data, spacing_zyx=info.spacing_zyx, metadata=dict(info.metadata), source=str(path))


def pyramid_shapes(shape: tuple[int, int, int], levels: int | None = None, smallest: int = 256) -> list[tuple]:
    """Shapes of the pyramid: y and x halved per level (rounded up) until both fit ``smallest``."""
    shapes = [tuple(int(s) for s in shape)]
    while (levels is None and max(shapes[-1][1:]) > smallest) or (levels is not None and len(shapes) < levels):
        z, y, x = shapes[-1]
        if y == 1 and x == 1:
            break
        shapes.append((z, (y + 1) // 2, (x + 1) // 2))
    return shapes


def _halve_yx(slab: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks in y and x (an odd edge is padded by repeating it)."""
    z, y, x = slab.shape
    padded = np.pad(slab, ((0, 0), (0, y % 2), (0, x % 2)), mode="edge").astype(np.float32)
    return padded.reshape(z, (y + 1) // 2, 2, (x + 1) // 2, 2).mean(axis=(2, 4))


def write_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    spacing_zyx: tuple[float, float, float],
    metadata: Mapping[str, Any] | None = None,
    *,
    version: str = "0.4",
    levels: int | None = None,
    slab_depth: int = 16,
    chunks_yx: int = 256,
) -> Path:
    """Write a ZYX volume as an OME-Zarr image with a multiscale pyramid, slab by slab, atomically.

    Parameters
    ----------
    path
        Target folder, ``NAME.ome.zarr``; an existing image there is replaced only once the new one
        is complete.
    data
        A 3D array or array-like read ``slab_depth`` planes at a time (``data[z0:z1]``): a lazy
        prediction is computed slab by slab, never held whole.
    spacing_zyx
        Voxel size in micrometres (written as ``scale`` with unit ``micrometer``).
    metadata
        Scalars kept in the group's attributes under ``fusemycell`` (channel, study, ...).
    version
        NGFF version, ``0.4`` (Zarr v2, what most viewers open today) or ``0.5`` (Zarr v3).
    levels
        Pyramid levels; None = halve y and x until both fit one chunk.
    """
    import zarr

    path = Path(path)
    shape, spacing = _checked_geometry(path, data, spacing_zyx, version)
    dtype = np.dtype(data.dtype)
    shapes = pyramid_shapes(shape, levels, smallest=chunks_yx)
    depth = max(1, int(slab_depth))
    try:
        with writing_atomically(path) as temporary:
            group = zarr.open_group(str(temporary), mode="w", zarr_format=2 if version == "0.4" else 3)
            _write_pyramid(group, data, shapes, dtype, depth=depth, chunks_yx=chunks_yx)
            _write_multiscales(group, path, shapes, spacing, version=version, metadata=metadata)
    except OSError as exc:
        raise could_not_write(path, exc) from exc
    return path


def _checked_geometry(
    path: Path, data: Any, spacing_zyx: Any, version: str
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if version not in VERSIONS:
        raise ValueError(f"OME-Zarr version {version!r}: expected one of {', '.join(VERSIONS)}")
    if len(data.shape) != 3 or any(s == 0 for s in data.shape):
        raise _fail(path, f"cannot write shape {tuple(data.shape)}: expected a non-empty 3D ZYX array")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise _fail(path, f"cannot write spacing {spacing_zyx}: expected three positive sizes (z, y, x)")
    return tuple(int(s) for s in data.shape), spacing  # type: ignore[return-value]


def _write_pyramid(group: Any, data: Any, shapes: list, dtype: np.dtype, *, depth: int, chunks_yx: int) -> None:
    """Every level, slab by slab: a lazy prediction is computed plane by plane, in order, never held whole."""
    arrays = [
        group.create_array(
            str(level),
            shape=level_shape,
            chunks=(min(depth, level_shape[0]), min(chunks_yx, level_shape[1]), min(chunks_yx, level_shape[2])),
            dtype=dtype,
            config={"write_empty_chunks": True},  # every chunk stored: a missing one is then always a loss
        )
        for level, level_shape in enumerate(shapes)
    ]
    total = shapes[0][0]
    for z0 in range(0, total, depth):
        slab = np.stack([np.asarray(data[z]) for z in range(z0, min(z0 + depth, total))])
        arrays[0][z0 : z0 + len(slab)] = slab
        level_slab = slab
        for array in arrays[1:]:
            level_slab = _halve_yx(level_slab)
            array[z0 : z0 + len(slab)] = _cast(level_slab, dtype)


def _write_multiscales(
    group: Any, path: Path, shapes: list, spacing: tuple[float, float, float], *, version: str, metadata: Any
) -> None:
    """The NGFF multiscales metadata (ome-zarr-py writes it) and our scalars under :data:`METADATA_KEY`."""
    from ome_zarr.format import FormatV04, FormatV05

    with warnings.catch_warnings():
        # ome-zarr-py builds a deprecated Scaler as a default argument at import; we downsample ourselves
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_multiscales_metadata

    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [spacing[0], spacing[1] * 2**level, spacing[2] * 2**level]}
            ],
        }
        for level in range(len(shapes))
    ]
    axes = [{"name": name, "type": "space", "unit": "micrometer"} for name in ("z", "y", "x")]
    fmt = FormatV04() if version == "0.4" else FormatV05()
    write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes, name=path.name.split(".")[0])
    plain = {str(k): v for k, v in (metadata or {}).items() if isinstance(v, (str, int, float, bool))}
    group.attrs[METADATA_KEY] = {"metadata": plain}


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def save_ome_zarr(path: str | os.PathLike, volume: Volume, **options: Any) -> Path:
    """Write a :class:`Volume` with :func:`write_ome_zarr`."""
    return write_ome_zarr(path, volume.data, volume.spacing_zyx, volume.metadata, **options)
