"""``BioimageioPackageDataset``: the trained model as a BioImage Model Zoo package (one zip)."""

from __future__ import annotations

from kedro.io.core import DatasetError

from fusemycell.datasets.model_dataset import ExportedFileDataset
from fusemycell.export.bioimageio import StagedPackage, save_package


class BioimageioPackageDataset(ExportedFileDataset):
    """Saves a staged package (:func:`fusemycell.export.bioimageio.build_package`) as a zip, atomically;
    loads the zip's path (open it with ``bioimageio.core.load_description``, deepImageJ, ilastik, ...).

    Example catalog entry::

        bioimageio_model:
          type: fusemycell.datasets.BioimageioPackageDataset
          filepath: data/06_models/fusemycell_unet.bioimageio.zip
    """

    what = "bioimage.io package"

    def save(self, data: StagedPackage) -> None:
        """Zip the staged package to ``filepath`` (temporary name, then rename)."""
        if not isinstance(data, StagedPackage):
            raise DatasetError(f"{self._filepath}: expected a staged bioimage.io package, got {type(data).__name__}")
        try:
            save_package(data, self._filepath)
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc
