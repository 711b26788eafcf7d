"""``BioimageioPackageDataset``: the trained model as a BioImage Model Zoo package (one zip)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell.export.bioimageio import StagedPackage, save_package


class BioimageioPackageDataset(AbstractDataset[StagedPackage, str]):
    """Saves a staged package (:func:`fusemycell.export.bioimageio.build_package`) as a zip, atomically;
    loads the zip's path (open it with ``bioimageio.core.load_description``, deepImageJ, ilastik, ...).

    Example catalog entry::

        bioimageio_model:
          type: fusemycell.datasets.BioimageioPackageDataset
          filepath: data/06_models/fusemycell_unet.bioimageio.zip
    """

    def __init__(self, *, filepath: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Create a dataset for the package ``filepath`` (a ``.zip``)."""
        self._filepath = PurePosixPath(Path(filepath).as_posix())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> str:
        """The package's path."""
        if not Path(self._filepath).is_file():
            raise DatasetError(
                f"{self._filepath}: no bioimage.io package yet; run 'kedro run --pipelines training' first"
            )
        return str(self._filepath)

    def save(self, data: StagedPackage) -> None:
        """Zip the staged package to ``filepath`` (temporary name, then rename)."""
        if not isinstance(data, StagedPackage):
            raise DatasetError(f"{self._filepath}: expected a staged bioimage.io package, got {type(data).__name__}")
        try:
            save_package(data, self._filepath)
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()
