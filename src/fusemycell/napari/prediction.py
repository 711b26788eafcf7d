"""Predicting a napari layer: the model found, the prediction run in the caller's thread, progress followed.

The widget (:mod:`fusemycell.napari.widget`) runs :func:`predict_volume` in a worker thread; this
module has no Qt in it. The prediction is the project's in-memory one
(:func:`fusemycell.inference.apply.predict_in_memory`: the input's own percentiles, the model card's
resampling and crop, the sliding window, the mapping back to uint16), so a layer gets the voxels
``fusemycell predict`` writes for the same file. Its progress is followed with
:func:`fusemycell.progress.listen`, which also stops it between two batches of tiles when asked to.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fusemycell.errors import Setting, UserError
from fusemycell.inference.apply import predict_in_memory
from fusemycell.inference.outside import DomainCheck, check_array
from fusemycell.inference.settings import InferenceSettings
from fusemycell.models.model_file import TrainedModel, load_model
from fusemycell.parameters import DEFAULT_MODEL
from fusemycell.progress import ProgressUpdate, listen
from fusemycell.tracking import fetch_artifact, is_artifact_uri


class PredictionCancelled(Exception):
    """The prediction was cancelled before it finished."""


@dataclass(frozen=True)
class PredictionOptions:
    """What the widget asks for; everything else is the model card's (or ``params:inference``'s default)."""

    model: str = DEFAULT_MODEL
    """A model file (relative to the project folder, or absolute) or an MLflow URI (``runs:/<run id>/...``)."""
    tile_zyx: tuple[int, int, int] | None = None
    """Tile size in voxels; None = the model's default tile."""
    tta: bool = False
    """Average the predictions of the flips along y and x."""
    backend: Literal["torch", "onnx"] = "torch"
    """PyTorch, or ONNX Runtime on the model's ONNX export (``NAME.onnx`` next to ``NAME.pt``)."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """PyTorch device."""
    amp: bool = True
    """Mixed precision where the device gains from it (bf16 on GPUs and on CPUs that compute it natively)."""
    outside_training: Literal["warn", "base", "refuse"] = "warn"
    """A layer outside the model's training domain: predict and warn, show the blurred input (the residual
    base) instead, or refuse (``inference.outside_training``)."""
    project_dir: Path = field(default_factory=Path.cwd)
    """Where a relative model path is looked for."""

    def model_location(self) -> str:
        """:attr:`model` as it is loaded: an MLflow URI as given, a file as an absolute path (a relative one
        is in :attr:`project_dir`)."""
        location = self.model.strip()
        if not location or is_artifact_uri(location):
            return location
        path = Path(location).expanduser()
        return str(path if path.is_absolute() else (self.project_dir / path).absolute())

    def settings(self) -> InferenceSettings:
        """The inference settings of these options (the project's defaults for the rest)."""
        return InferenceSettings(
            backend=self.backend,
            device=self.device,
            tile_zyx=self.tile_zyx,
            tta=self.tta,
            amp=self.amp,
            background_io=False,  # the array is in memory: nothing to read ahead
            outside_training=self.outside_training,
        )


def project_folder(start: str | Path | None = None) -> Path:
    """The Kedro project holding ``start`` (default: the working directory), or ``start`` itself.

    napari started from a project's sub-folder (``notebooks/``) still finds ``data/06_models``.
    """
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "conf").is_dir():
            return folder
    return start


def parse_tile(text: str) -> tuple[int, int, int] | None:
    """``"32, 128, 128"`` -> ``(32, 128, 128)``; empty -> None (the model's tile).

    Raises
    ------
    fusemycell.errors.UserError
        Saying what a tile is, for anything else.
    """
    parts = [p for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
    if not parts:
        return None
    try:
        tile = tuple(int(p) for p in parts)
    except ValueError:
        tile = ()
    if len(tile) != 3 or min(tile) < 1:
        raise UserError(
            "{tile} {text!r}: give three sizes in voxels, z, y, x (e.g. 32, 128, 128), or leave it empty",
            tile=Setting("inference.tile_zyx"),
            text=text,
        )
    return tile  # type: ignore[return-value]


class NoModelError(UserError, FileNotFoundError):
    """The model chosen (or its ONNX export) is not there; the message says how to get one."""


#: The model setting (the widget's "model" box, ``fusemycell predict``'s ``--model``).
MODEL = Setting("inference.model_uri")


def onnx_sibling(location: str) -> str:
    """The ONNX export saved next to a model: ``NAME.onnx`` for ``NAME.pt`` (a path or an MLflow URI)."""
    return location[: -len(".pt")] + ".onnx" if location.endswith(".pt") else location + ".onnx"


def load_for_prediction(options: PredictionOptions, scratch: str | Path) -> tuple[TrainedModel, str | None]:
    """The model of ``options.model`` and, for the ONNX backend, the path of its export.

    MLflow URIs are fetched into ``scratch`` from the tracking server in force (``MLFLOW_TRACKING_URI``,
    else MLflow's default: ``mlflow.db`` in the working directory, the project's store).

    Raises
    ------
    NoModelError
        Naming the model (or its ONNX export) that is not there, and how to get one.
    fusemycell.models.model_file.CheckpointError
        For a file that is not a fusemycell model.
    """
    location = options.model.strip()
    if not location:
        raise NoModelError(
            "no model chosen: put a model file (.pt) or an MLflow URI (runs:/<run id>/...) in {model}", model=MODEL
        )
    if is_artifact_uri(location):
        model = load_model(fetch_artifact(location, Path(scratch) / "model"))
        onnx = fetch_artifact(onnx_sibling(location), Path(scratch) / "onnx") if options.backend == "onnx" else None
        return model, onnx
    path = Path(options.model_location())
    if not path.is_file():
        raise NoModelError(
            "{path}: no model file there; train one ('kedro run' in the project folder) or choose another one in "
            "{model}",
            path=path,
            model=MODEL,
        )
    model = load_model(path)
    if options.backend != "onnx":
        return model, None
    onnx = Path(onnx_sibling(str(path)))
    if not onnx.is_file():
        raise NoModelError(
            "{onnx}: no ONNX export next to the model; choose {torch}",
            onnx=onnx,
            torch=Setting("inference.backend", "torch", assignment=False),
        )
    return model, str(onnx)


def known_spacing(scale: Sequence[float]) -> tuple[float, float, float] | None:
    """A layer's ``scale`` as the voxel size, or None when it is napari's default (1, 1, 1: not known)."""
    spacing = tuple(float(s) for s in scale[-3:])
    return None if spacing == (1.0, 1.0, 1.0) else spacing  # type: ignore[return-value]


def predict_volume(
    data: Any,
    spacing_zyx: Sequence[float] | None,
    options: PredictionOptions,
    *,
    name: str = "layer",
    on_progress: Callable[[ProgressUpdate], None] | None = None,
    cancel: threading.Event | None = None,
    on_check: Callable[[DomainCheck], None] | None = None,
) -> np.ndarray:
    """The uint16 prediction of a ZYX volume (an array or a lazily read one), on the volume's grid.

    ``spacing_zyx`` is its voxel size in micrometres (None: the training data's is assumed).
    ``on_progress`` is told the tiles done (in this thread); setting ``cancel`` stops the work at
    the next batch of tiles with :class:`PredictionCancelled`. ``on_check`` is told how the volume
    compares with the model's training domain (an unknown voxel size is not checked) before the
    prediction starts; ``options.outside_training`` says what happens to a volume outside it.

    Raises
    ------
    fusemycell.errors.UserError
        For a volume that is not 3D, and every problem of the input the inference reports (naming ``name``);
        :class:`~fusemycell.inference.outside.OutsideTrainingError` for a volume outside the
        training domain under ``outside_training: refuse``.
    """
    cancel = cancel or threading.Event()

    def follow(update: ProgressUpdate) -> None:
        if cancel.is_set():
            raise PredictionCancelled("prediction cancelled")
        if on_progress is not None:
            on_progress(update)

    if len(data.shape) != 3:
        raise UserError(
            "{name}: a layer of shape {shape}; the model predicts 3D volumes (z, y, x)",
            name=name,
            shape=tuple(data.shape),
        )
    settings = options.settings()
    with tempfile.TemporaryDirectory(prefix="fusemycell-napari-") as scratch:
        model, onnx = load_for_prediction(options, scratch)
        follow(ProgressUpdate(f"reading {name}", 0, None, "tile"))
        volume = np.asarray(data)  # a lazily read layer is read here, in the worker thread
        check = check_array(volume, model.card, spacing_zyx, name, options.outside_training)
        if on_check is not None:
            on_check(check)
        follow(ProgressUpdate(f"predicting {name}", 0, None, "tile"))
        with listen(follow):
            return predict_in_memory(
                volume, model, settings, spacing_zyx=spacing_zyx, onnx_path=onnx, name=name, check=check
            )
