"""Model files in the catalog: the PyTorch model (``.pt``) and its ONNX export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell.models.model_file import (
    MODEL_SETTING,
    CheckpointError,
    TrainedModel,
    is_remote,
    load_model,
    save_model,
)


class TorchModelDataset(AbstractDataset[TrainedModel, TrainedModel]):
    """Saves a :class:`~fusemycell.models.model_file.TrainedModel` atomically; loads it with
    ``torch.load(weights_only=True)`` (a file carrying pickled code is refused).

    ``filepath`` may also be an MLflow artifact URI (``runs:/<run id>/model/fusemycell_unet.pt``,
    ``models:/...``): the file is then fetched from the tracking server (read only); or any location
    fsspec opens (``s3://bucket/fusemycell_unet.pt`` with s3fs installed, ``memory://...``).

    A file that is not a model file is refused with a message saying what it is and what to give
    instead (:mod:`fusemycell.models.file_kind`).

    Example catalog entry::

        trained_model:
          type: fusemycell.datasets.TorchModelDataset
          filepath: data/06_models/fusemycell_unet.pt
    """

    def __init__(self, *, filepath: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Create a dataset for the model file ``filepath`` (local, or an MLflow artifact URI)."""
        self._uri = str(filepath)
        self._mlflow = self._uri.startswith(("runs:/", "models:/", "mlflow-artifacts:"))
        self._remote = not self._mlflow and is_remote(self._uri)
        # a URI keeps its "//" (PurePosixPath would fold s3://bucket into s3:/bucket, a local path)
        self._filepath = self._uri if self._mlflow or self._remote else PurePosixPath(Path(filepath).as_posix())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> TrainedModel:
        """Rebuild the network from the file alone."""
        if self._mlflow:
            return self._load_from_mlflow()
        if not self._remote and not Path(self._filepath).exists():
            raise CheckpointError(
                "{path}: no trained model yet; run 'kedro run --pipelines training' first, or give a model file "
                "({model})",
                path=self._filepath,
                model=MODEL_SETTING,
            )
        return load_model(str(self._filepath))  # its CheckpointError says what the file is: Kedro wraps it

    def _load_from_mlflow(self) -> TrainedModel:
        import mlflow

        with tempfile.TemporaryDirectory() as scratch:
            try:
                local = mlflow.artifacts.download_artifacts(artifact_uri=self._uri, dst_path=scratch)
            except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI
                raise DatasetError(f"{self._uri}: could not fetch the model from MLflow ({exc})") from exc
            try:
                return load_model(local)
            except CheckpointError as exc:  # named by its URI, not by the temporary copy
                if "source" in exc.values:
                    raise CheckpointError(exc.template, **{**exc.values, "source": self._uri}) from None
                raise

    def save(self, data: TrainedModel) -> None:
        """Write the model (weights, configuration, metadata) atomically."""
        if self._mlflow:
            raise DatasetError(f"{self._uri}: an MLflow URI is read-only; save to a local file")
        if not isinstance(data, TrainedModel):
            raise DatasetError(f"{self._filepath}: TorchModelDataset saves a TrainedModel, got {type(data).__name__}")
        try:
            save_model(data, str(self._filepath))
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc

    def _exists(self) -> bool:
        if self._remote:
            import fsspec

            try:
                filesystem, path = fsspec.core.url_to_fs(self._uri)
                return filesystem.info(path).get("type") == "file"  # isfile() would answer False for no access
            except FileNotFoundError:
                return False
            except Exception:  # noqa: BLE001 - no access, no package: load() says which, naming the setting
                return True
        return self._mlflow or Path(self._filepath).is_file()


class ExportedFileDataset(AbstractDataset[Any, Any]):
    """A file the training pipeline exports (ONNX, bioimage.io package); ``load`` gives its path
    (:class:`OnnxModelDataset` opens it).

    Subclasses set :attr:`what` (for the "not exported yet" message) and implement ``save``.
    """

    what = "export"

    def __init__(self, *, filepath: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """A dataset for the file ``filepath``."""
        self._filepath = PurePosixPath(Path(filepath).as_posix())
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def load(self) -> str:
        """The file's path."""
        if not Path(self._filepath).is_file():
            raise DatasetError(f"{self._filepath}: no {self.what} yet; run 'kedro run --pipelines training' first")
        return str(self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()


class OnnxModelDataset(ExportedFileDataset):
    """Saves a :class:`TrainedModel` as ONNX (dynamic spatial axes, the model card in its metadata); loads
    the exported model, ready to predict: an :class:`fusemycell.inference.onnx_backend.OnnxBackend`
    (ONNX Runtime session, ``card``, ``path``).

    Example catalog entry::

        onnx_model:
          type: fusemycell.datasets.OnnxModelDataset
          filepath: data/06_models/fusemycell_unet.onnx
    """

    what = "ONNX model"

    def load(self) -> Any:
        """The exported network in an ONNX Runtime session (what ``save`` wrote)."""
        from fusemycell.inference.onnx_backend import OnnxBackend

        path = super().load()
        try:
            return OnnxBackend(path)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own types for a damaged file
            raise DatasetError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc

    def save(self, data: TrainedModel) -> None:
        """Export atomically."""
        from fusemycell.inference.onnx_backend import export_onnx

        if not isinstance(data, TrainedModel):
            raise DatasetError(f"{self._filepath}: OnnxModelDataset saves a TrainedModel, got {type(data).__name__}")
        try:
            export_onnx(data, self._filepath)
        except OSError as exc:
            raise DatasetError(f"could not write {self._filepath}: {exc}") from exc
