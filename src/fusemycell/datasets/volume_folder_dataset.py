"""``VolumeFolderDataset``: a folder of single views or predictions, TIFF files and OME-Zarr images alike."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from kedro.io.core import DatasetError

from fusemycell.datasets.tiff_folder_dataset import TiffFolderDataset
from fusemycell.io.ome_zarr import VERSIONS, save_ome_zarr
from fusemycell.io.tiff import Volume, VolumeFormatError, is_ome_zarr, remove_leftovers, save_volume
from fusemycell.progress import track

logger = logging.getLogger(__name__)


class VolumeFolderDataset(TiffFolderDataset):
    """``load``: ``{name: path}`` of the folder's ``*.tif``/``*.tiff`` files and ``*.zarr`` OME-Zarr images.
    ``save``: ``{name: Volume or callable}``; a name ending in ``.zarr`` is written as an OME-Zarr
    image with a pyramid (:func:`fusemycell.io.ome_zarr.write_ome_zarr`), any other as a TIFF.

    Both are written slab by slab and atomically; one volume that fails does not stop the others,
    then the save fails naming each.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        save_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """``save_args``: ``ome_zarr_version`` (``0.4``, the default, or ``0.5``), ``levels``, ``slab_depth``."""
        super().__init__(path=path, metadata=metadata)
        self._save_args = dict(save_args or {})
        version = str(self._save_args.pop("ome_zarr_version", "0.4"))
        if version not in VERSIONS:
            raise DatasetError(f"{path}: ome_zarr_version {version!r}, expected one of {', '.join(VERSIONS)}")
        self._save_args["version"] = version

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "save_args": self._save_args}

    def load(self) -> dict[str, str]:
        """The folder's TIFF files and OME-Zarr images by name."""
        if not self._path.is_dir():
            raise DatasetError(f"{self._path}: folder not found")
        return {
            p.name: str(p)
            for p in sorted(self._path.iterdir())
            if not p.name.startswith(".")
            and ((p.is_file() and p.suffix.lower() in (".tif", ".tiff")) or (p.is_dir() and is_ome_zarr(p)))
        }

    def save(self, data: Mapping[str, Volume | Callable[[], Volume]]) -> None:
        """Write every volume in the format its name says; then fail naming those that could not be written."""
        self._path.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self._path)  # temporary files of a previous, killed run
        failures = []
        for name, value in track(data.items(), f"writing {self._path}", total=len(data), unit="file"):
            target = self._path / name
            try:
                volume = value() if callable(value) else value
                if is_ome_zarr(name):
                    save_ome_zarr(target, volume, **self._save_args)
                else:
                    save_volume(target, volume)
                logger.info("wrote %s", target)
            except (VolumeFormatError, OSError, ValueError) as exc:
                failures.append(f"{name}: {exc}")
                logger.error("could not write %s: %s", target, exc)
        if failures:
            raise DatasetError(
                f"{len(failures)} of {len(data)} volume(s) could not be written:\n  - " + "\n  - ".join(failures)
            )

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self.load())
