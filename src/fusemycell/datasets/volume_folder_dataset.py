"""``VolumeFolderDataset``: a folder of single views or predictions, TIFF files and OME-Zarr images alike."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from fusemycell.datasets.tiff_folder_dataset import TiffFolderDataset
from fusemycell.io.naming import is_ome_zarr
from fusemycell.io.ome_zarr import VERSIONS, save_ome_zarr
from fusemycell.io.volume import Volume

logger = logging.getLogger(__name__)


class VolumeFolderDataset(TiffFolderDataset):
    """:class:`TiffFolderDataset` (provenance, atomic writes, outcomes told to the run) that also holds OME-Zarr images.

    ``load``: ``{name: VolumeSource}`` of the folder's ``*.tif``/``*.tiff`` files and ``*.zarr`` OME-Zarr
    images (or of one such file or image): call one for its volume, read lazily. ``save``: a name ending
    in ``.zarr`` is written as an OME-Zarr image with a pyramid (:func:`fusemycell.io.ome_zarr.write_ome_zarr`),
    any other as a TIFF.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        overwrite: bool = False,
        report_dir: str | os.PathLike | None = None,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """``save_args``: ``ome_zarr_version`` (``0.4``, the default, or ``0.5``), ``levels``, ``slab_depth``."""
        super().__init__(path=path, overwrite=overwrite, report_dir=report_dir, metadata=metadata)
        self._save_args = dict(save_args or {})
        version = str(self._save_args.pop("ome_zarr_version", "0.4"))
        if version not in VERSIONS:
            raise DatasetError(f"{path}: ome_zarr_version {version!r}, expected one of {', '.join(VERSIONS)}")
        self._save_args["version"] = version

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "save_args": self._save_args}

    def _files(self) -> dict[str, str]:
        """The TIFF files and OME-Zarr images by name."""
        if is_ome_zarr(self._path) and self._path.is_dir():
            return {self._path.name: str(self._path)}
        if self._path.is_dir():
            images = {
                p.name: str(p)
                for p in sorted(self._path.iterdir())
                if p.is_dir() and is_ome_zarr(p) and not p.name.startswith(".")
            }
            return dict(sorted({**super()._files(), **images}.items()))
        return super()._files()

    def _write_volume(self, target: Path, volume: Volume) -> None:
        if is_ome_zarr(target.name):
            save_ome_zarr(target, volume, **self._save_args)
        else:
            super()._write_volume(target, volume)

    def _exists(self) -> bool:
        """Volumes to read, one file (what it is, the load says), or a folder with something in it (what it
        holds is then judged by the run, e.g. "sub-folders are not searched"); an empty folder does not
        exist yet (a pipeline may fill it)."""
        if self._path.is_file():
            return True
        try:
            if self._files():
                return True
        except DatasetError:
            return False
        return self._path.is_dir() and any(not p.name.startswith(".") for p in self._path.iterdir())
