"""``PatchStoreDataset``: a folder of training patches (see :mod:`fusemycell.patching.store`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell.datasets.folder_writer import LockedFolderWriter
from fusemycell.datasets.previews import TablePreview
from fusemycell.patching.extract import PatchPlan
from fusemycell.patching.store import PatchStore, PatchStoreError


class PatchStoreDataset(LockedFolderWriter, AbstractDataset[PatchPlan, PatchStore]):
    """Saves a :class:`~fusemycell.patching.extract.PatchPlan` by cutting its patches into a store folder
    (atomically, one patch in memory at a time); loads a memory-mapped
    :class:`~fusemycell.patching.store.PatchStore`.

    Example catalog entry::

        patch_store_train:
          type: fusemycell.datasets.PatchStoreDataset
          path: data/05_model_input/patches/train
    """

    def __init__(self, *, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Create a dataset for the store folder ``path``."""
        self._path = Path(path)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def load(self) -> PatchStore:
        """Open the store (memory maps are opened on first access, per process)."""
        try:
            return PatchStore(self._path)
        except PatchStoreError as exc:
            raise DatasetError(str(exc)) from exc

    def save(self, data: PatchPlan) -> None:
        """Cut the plan's patches into the store folder, replacing any previous store."""
        if not isinstance(data, PatchPlan):
            raise DatasetError(f"{self._path}: PatchStoreDataset saves a PatchPlan, got {type(data).__name__}")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._writing():
                data.write(self._path)
        except (PatchStoreError, OSError) as exc:
            raise DatasetError(str(exc)) from exc

    def _lock_folder(self) -> Path:
        # the store folder itself is replaced by a rename: the lock lives in the folder that holds it
        return self._path.parent

    def _exists(self) -> bool:
        return (self._path / "store.json").is_file()

    def preview(self, nrows: int = 20) -> TablePreview:
        """kedro-viz preview: the first rows of the patch index."""
        index = self.load().index.head(nrows)
        return TablePreview(index.to_dict(orient="split"))
