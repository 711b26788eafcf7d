"""Any volume, whatever its format: the reader is chosen by the path.

A single view may be a TIFF (:mod:`fusemycell.io.tiff`) or an OME-Zarr image
(:mod:`fusemycell.io.ome_zarr`, a ``.zarr`` folder); both give the same
:class:`~fusemycell.io.volume.Volume` and :class:`~fusemycell.io.volume.VolumeInfo`.
"""

from __future__ import annotations

import os

from fusemycell.io.naming import is_ome_zarr
from fusemycell.io.ome_zarr import read_ome_zarr, read_ome_zarr_info
from fusemycell.io.tiff import read_tiff
from fusemycell.io.tiff_header import read_tiff_info
from fusemycell.io.volume import Volume, VolumeInfo


def read_info(path: str | os.PathLike) -> VolumeInfo:
    """Read shape, dtype, voxel size and metadata of a volume without reading its voxels.

    Raises
    ------
    VolumeFormatError
        Naming the file and the problem (see :func:`~fusemycell.io.tiff_header.read_tiff_info` and
        :func:`~fusemycell.io.ome_zarr.read_ome_zarr_info`).
    """
    return read_ome_zarr_info(path) if is_ome_zarr(path) else read_tiff_info(path)


def read_volume(path: str | os.PathLike, *, lazy: bool = False) -> Volume:
    """Read a volume, a TIFF file or an OME-Zarr image (``lazy``: ``Volume.data`` reads what is sliced).

    Raises
    ------
    VolumeFormatError
        If the file is not a readable 3D volume (see :func:`read_info`).
    """
    return read_ome_zarr(path, lazy=lazy) if is_ome_zarr(path) else read_tiff(path, lazy=lazy)
