"""``TorchModelDataset``: a trained U-Net with its configuration and metadata, one ``.pt`` file."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell.models.checkpoint import CheckpointError, TrainedModel, load_model, save_model


class TorchModelDataset(AbstractDataset[TrainedModel, TrainedModel]):
    """Saves a :class:`~fusemycell.models.checkpoint.TrainedModel` atomically; loads it with
    ``torch.load(weights_only=True)`` (a file carrying pickled code is refused).

    Example catalog entry::

        trained_model:
          type: fusemycell.datasets.TorchModelDataset
          filepath: data/06_models/fusemycell_unet.pt
    """

    def __init__(self, *, filepath: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Create a dataset for the model file ``filepath`` (local)."""
        self._filepath = PurePosixPath(Path(filepath).as_posix())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> TrainedModel:
        """Rebuild the network from the file alone."""
        if not Path(self._filepath).is_file():
            raise DatasetError(f"{self._filepath}: no trained model yet; run 'kedro run --pipeline training' first")
        try:
            return load_model(self._filepath)
        except CheckpointError as exc:
            raise DatasetError(str(exc)) from exc

    def save(self, data: TrainedModel) -> None:
        """Write the model (weights, configuration, metadata) atomically."""
        if not isinstance(data, TrainedModel):
            raise DatasetError(f"{self._filepath}: TorchModelDataset saves a TrainedModel, got {type(data).__name__}")
        try:
            save_model(data, self._filepath)
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()
