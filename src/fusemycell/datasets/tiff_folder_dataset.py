"""``TiffFolderDataset``: a flat folder of TIFF volumes with any names (challenge inputs and outputs)."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview

from fusemycell.io.atomic import remove_leftovers
from fusemycell.io.tiff import Volume, VolumeFormatError, read_volume, save_volume
from fusemycell.progress import track

logger = logging.getLogger(__name__)


class TiffFolderDataset(AbstractDataset[Mapping[str, Volume | Callable[[], Volume]], dict[str, str]]):
    """``load``: ``{file name: path}`` of the folder's ``*.tif``/``*.tiff`` (no voxels read).
    ``save``: ``{file name: Volume or callable}``, each written atomically under that name.

    One file that fails (unreadable input found while streaming, disk error)
    does not stop the others: they are all written, then the save fails
    naming every file that could not be written.
    """

    def __init__(self, *, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """A dataset over the local folder ``path``."""
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> dict[str, str]:
        """The folder's TIFF files by name."""
        if not self._path.is_dir():
            raise DatasetError(f"{self._path}: folder not found")
        return {
            p.name: str(p)
            for p in sorted(self._path.iterdir())
            if p.is_file() and p.suffix.lower() in (".tif", ".tiff") and not p.name.startswith(".")
        }

    def save(self, data: Mapping[str, Volume | Callable[[], Volume]]) -> None:
        """Write every volume; then fail naming those that could not be written."""
        self._path.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self._path)  # temporary files of a previous, killed run
        failures = []
        for name, value in track(data.items(), f"writing {self._path}", total=len(data), unit="file"):
            target = self._path / name
            try:
                volume = value() if callable(value) else value
                save_volume(target, volume)
                logger.info("wrote %s", target)
            except (VolumeFormatError, OSError, ValueError) as exc:
                failures.append(f"{name}: {exc}")
                logger.error("could not write %s: %s", target, exc)
        if failures:
            raise DatasetError(
                f"{len(failures)} of {len(data)} volume(s) could not be written:\n  - " + "\n  - ".join(failures)
            )

    def preview(self) -> ImagePreview:
        """kedro-viz preview: the z maximum projection of the folder's first volume (read slab by slab)."""
        from fusemycell.datasets.tiff_volume_dataset import max_projection_png

        files = self.load()
        if not files:
            raise DatasetError(f"{self._path}: no TIFF volume to preview")
        try:
            volume = read_volume(next(iter(files.values())), lazy=True)
        except VolumeFormatError as exc:
            raise DatasetError(str(exc)) from exc
        return ImagePreview(base64.b64encode(max_projection_png(volume.data)).decode("utf-8"))

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self.load())
