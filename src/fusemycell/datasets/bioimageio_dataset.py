"""``BioimageioPackageDataset``: the trained model as a BioImage Model Zoo package (one zip)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from fusemycell.datasets.model_dataset import ExportedFileDataset
from fusemycell.datasets.volume_sources import VolumeSourceError
from fusemycell.export.bioimageio import NotExported, StagedPackage, save_package
from fusemycell.io.atomic import writing_atomically
from fusemycell.tracking import RunLogger

logger = logging.getLogger(__name__)


class BioimageioPackageDataset(ExportedFileDataset):
    """Saves a staged package (:func:`fusemycell.export.bioimageio.build_package`) as a zip, atomically;
    loads the zip's path (open it with ``bioimageio.core.load_description``, deepImageJ, ilastik, ...).

    Example catalog entry::

        bioimageio_model:
          type: fusemycell.datasets.BioimageioPackageDataset
          filepath: data/06_models/fusemycell_unet.bioimageio.zip
    """

    what = "bioimage.io package"

    def __init__(
        self, *, filepath: str, artifact_path: str | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        """A dataset for the zip ``filepath``; what it writes is logged to the active MLflow run under
        ``artifact_path`` (none: not logged)."""
        super().__init__(filepath=filepath, metadata=metadata)
        self._artifact_path = artifact_path

    def _log(self, path: Path) -> None:
        run = RunLogger.current()
        if run is not None and self._artifact_path is not None:
            run.artifact(path, self._artifact_path)

    @property
    def _reason_path(self) -> Path:
        return Path(f"{self._filepath}.not-exported.txt")

    def load(self) -> str:
        """The zip's path; a model that could not be packaged is named with the reason."""
        if not Path(self._filepath).is_file() and self._reason_path.is_file():
            raise VolumeSourceError(f"{self._filepath}: not exported: {self._reason_path.read_text().strip()}")
        return super().load()

    def save(self, data: StagedPackage | NotExported) -> None:
        """Zip the staged package to ``filepath`` (temporary name, then rename).

        For :class:`NotExported`, a previous package (of another model) is removed and the reason
        is written next to where the package would be.
        """
        if isinstance(data, NotExported):
            Path(self._filepath).unlink(missing_ok=True)
            with writing_atomically(self._reason_path) as temporary:
                temporary.write_text(data.reason + "\n")
            logger.warning("no bioimage.io package: %s", data.reason)
            self._log(self._reason_path)
            return
        self._reason_path.unlink(missing_ok=True)
        if not isinstance(data, StagedPackage):
            raise DatasetError(f"{self._filepath}: expected a staged bioimage.io package, got {type(data).__name__}")
        try:
            save_package(data, self._filepath)
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc
        self._log(Path(self._filepath))
