"""What every volume format shares: the :class:`Volume`, its header (:class:`VolumeInfo`), lazy arrays, errors.

The format readers (:mod:`fusemycell.io.tiff`, :mod:`fusemycell.io.ome_zarr`) build these types and
import them from here; :mod:`fusemycell.io.formats` chooses the reader by the path. This module reads
no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusemycell.errors import UserError

#: Voxel types of raw volumes (single views and fused targets): the challenge's uint16, plus uint8 and float32.
RAW_DTYPES = ("uint8", "uint16", "float32")


class VolumeFormatError(UserError):
    """A file is not a readable 3D FuseMyCell volume; the message names the file."""


def format_error(path: Any, problem: str) -> VolumeFormatError:
    """The error for ``path``: ``"PATH: problem"``."""
    return VolumeFormatError(f"{path}: {problem}")


@dataclass
class Volume:
    """A ZYX volume with its voxel size and metadata.

    Attributes
    ----------
    data
        The voxels, ``(z, y, x)``: a NumPy array or, for lazy reads, a
        :class:`LazyArray` that reads what is sliced.
    spacing_zyx
        Voxel size along z, y and x in micrometres.
    metadata
        All other metadata, keys in canonical spelling (``channel``, ``study``, ...).
    source
        The file it was read from, when it was read from one.
    spelling
        Spelling of the voxel-size keys in the file (a key of
        :data:`fusemycell.io.metadata.SPACING_SPELLINGS`); writing the volume back keeps it, so
        outputs look like their inputs.
    """

    data: Any
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    spelling: str = "PhysicalSizeX"

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the voxel array, ``(z, y, x)``."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Data type of the voxels."""
        return np.dtype(self.data.dtype)


@dataclass(frozen=True)
class VolumeInfo:
    """What a file holds, read from its header without reading voxels."""

    path: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    spacing_zyx: tuple[float, float, float]
    metadata: dict[str, Any]
    spacing_found: bool
    contiguous_offset: int | None
    spelling: str = "PhysicalSizeX"
    series: int = 0
    """Index of the image series read (a multi-series OME-TIFF can hold thumbnails or other images)."""
    compression: str = "NONE"
    """Compression of the voxel data (``NONE``, ``LZW``, ``ZSTD``, ...), as tifffile names it."""
    spacing_conflicts: tuple[str, ...] = ()
    """One line per axis whose voxel-size sources disagree (the value used is the first source's)."""


def raw_dtype_problem(dtype: Any) -> str | None:
    """Why voxels of type ``dtype`` cannot be a raw FuseMyCell volume, or ``None`` when they can.

    Any numeric type can be read; raw inputs and targets must be one of :data:`RAW_DTYPES`:
    a signed type means negative intensities (predictions are uint16), float64 is not written
    by any acquisition or by this pipeline and doubles memory.
    """
    dtype = np.dtype(dtype)
    if dtype.name in RAW_DTYPES:
        return None
    return f"voxel type {dtype.name} is not a raw FuseMyCell type (expected {', '.join(RAW_DTYPES)})"


class LazyArray:
    """The array protocol shared by the lazy volumes (``tiff.LazyVolume``, ``ome_zarr.LazyZarrVolume``).

    A subclass has ``path`` and ``info`` (a :class:`VolumeInfo`), is rebuilt from both, and
    implements ``__getitem__``.
    """

    path: str
    info: VolumeInfo

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape ``(z, y, x)``."""
        return self.info.shape

    @property
    def dtype(self) -> np.dtype:
        """Voxel data type."""
        return self.info.dtype

    @property
    def ndim(self) -> int:
        """Always 3."""
        return 3

    @property
    def nbytes(self) -> int:
        """Size of the whole volume in memory, in bytes."""
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[:, :, :]  # type: ignore[index]
        return data.astype(dtype) if dtype is not None else data

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["info"])  # type: ignore[misc]


def expand_key(key: Any, shape: tuple[int, ...]) -> tuple[Any, Any, Any]:
    """An index of a lazy array as one entry per axis (``...`` expanded, missing axes ``slice(None)``)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        index = key.index(Ellipsis)
        key = key[:index] + (slice(None),) * (len(shape) - len(key) + 1) + key[index + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for a {len(shape)}D volume: {key}")
    return tuple(key) + (slice(None),) * (len(shape) - len(key))  # type: ignore[return-value]
