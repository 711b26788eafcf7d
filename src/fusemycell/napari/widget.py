"""The dock widget "Predict fused view": a trained model applied to an image layer, in a worker thread.

The prediction runs in a napari ``thread_worker`` (the viewer stays responsive), with a progress
bar counting tiles and a Cancel button that stops it after the current batch of tiles. The result
is added as an image layer on the input's grid (same ``scale`` and ``translate``), named as a
prediction (``image_3_nucleus_angle fused (predicted)``: :func:`~fusemycell.napari.layers.prediction_name`)
with the model that made it in its metadata (``metadata["fusemycell"]["model"]``). Every problem
(no model file, a 2D layer, a cancelled run, a bug) is shown in the widget's status line, never
as a traceback in the viewer; unexpected errors also go to the log with their traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from fusemycell.errors import UserError, find_user_error, in_words
from fusemycell.inference.outside import DomainCheck
from fusemycell.napari.layers import contrast_limits, prediction_name
from fusemycell.napari.prediction import (
    PredictionCancelled,
    PredictionOptions,
    known_spacing,
    parse_tile,
    predict_volume,
    project_folder,
)
from fusemycell.napari.preferences import on_first_use
from fusemycell.parameters import DEFAULT_MODEL
from fusemycell.progress import ProgressUpdate

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
DEVICES = ("auto", "cpu", "cuda", "mps")
#: What happens to a layer outside the model's training domain (``inference.outside_training``).
OUTSIDE_TRAINING = ("warn", "base", "refuse")
#: How the widget names the settings in its messages: by its own controls.
CONTROL_NAMES: dict[str, str] = {
    "inference.model_uri": "the model box",
    "inference.tile_zyx": "tile",
    "inference.backend": "backend",
    "inference.device": "device",
    "inference.outside_training": "outside training",
}


class _ProgressSignal(QObject):
    """Carries progress from the worker thread to the widget (a queued signal: received in the GUI thread)."""

    update = Signal(object)


def _predict_and_measure(
    data: Any,
    spacing: Any,
    options: PredictionOptions,
    *,
    name: str,
    on_progress: Any,
    cancel: threading.Event,
) -> tuple[np.ndarray, tuple[float, float], float, DomainCheck | None]:
    """The worker's job: the prediction, its contrast limits, the seconds it took and how the layer compares
    with the training domain (all off the GUI thread)."""
    started = time.perf_counter()
    checks: list[DomainCheck] = []
    prediction = predict_volume(
        data, spacing, options, name=name, on_progress=on_progress, cancel=cancel, on_check=checks.append
    )
    return prediction, contrast_limits(prediction), time.perf_counter() - started, (checks or [None])[0]


class PredictWidget(QWidget):
    """Predict the fused view of an image layer with a trained fusemycell model.

    Parameters
    ----------
    napari_viewer
        The viewer (napari passes it); only its ``layers`` and ``add_image`` are used.
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        on_first_use()  # the plugin's first use may be its widget: FuseMyCell files opened next keep their voxel size
        self.viewer = napari_viewer
        self.project_dir = project_folder()
        self.worker: Any = None
        self._cancel = threading.Event()
        self.tile_progress = _ProgressSignal()
        """Emits each :class:`~fusemycell.progress.ProgressUpdate` of the running prediction (from its thread)."""
        self.tile_progress.update.connect(self._on_progress)
        self._make_controls()
        self._lay_out()
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self.refresh_layers)
        self.refresh_layers()

    def _make_controls(self) -> None:
        self.model_edit = QLineEdit(DEFAULT_MODEL)
        self.model_edit.setToolTip(
            "A fusemycell model file (.pt), relative to the project folder or absolute,\n"
            "or an MLflow URI: runs:/<run id>/model/fusemycell_unet.pt"
        )
        self.browse_button = QPushButton("Browse...")
        self.browse_button.clicked.connect(self._browse)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The single view to predict (a 3D image layer)")
        self.tile_edit = QLineEdit()
        self.tile_edit.setPlaceholderText("model default")
        self.tile_edit.setToolTip("Tile size in voxels, z, y, x (e.g. 32, 128, 128); empty: the model's tile")
        self.tta_check = QCheckBox("average over flips (TTA)")
        self.backend_combo = QComboBox()
        self.backend_combo.addItems(BACKENDS)
        self.backend_combo.setToolTip("torch: the .pt model; onnx: its ONNX export next to it, with ONNX Runtime")
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.outside_combo = QComboBox()
        self.outside_combo.addItems(OUTSIDE_TRAINING)
        self.outside_combo.setToolTip(
            "A layer unlike the model's training data (voxel size, shape, intensities, noise): warn (predict "
            "it and say why), base (show the blurred input instead) or refuse"
        )
        self.predict_button = QPushButton("Predict")
        self.predict_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    def _lay_out(self) -> None:
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("model", model_row)
        form.addRow("image", self.layer_combo)
        form.addRow("tile (z, y, x)", self.tile_edit)
        form.addRow("", self.tta_check)
        form.addRow("backend", self.backend_combo)
        form.addRow("device", self.device_combo)
        form.addRow("outside training", self.outside_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status)
        layout.addStretch()

    # ------------------------------------------------------------------ layers
    def image_layers(self) -> list[Image]:
        """The viewer's image layers that can be predicted (not RGB)."""
        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and not layer.rgb]

    def refresh_layers(self, *_: Any) -> None:
        """List the image layers; keep the chosen one, else choose the first single view (``*_angle``)."""
        chosen = self.layer_combo.currentText()
        layers = self.image_layers()
        self.layer_combo.clear()
        for layer in layers:
            self.layer_combo.addItem(layer.name, layer)
        names = [layer.name for layer in layers]
        if chosen in names:
            self.layer_combo.setCurrentIndex(names.index(chosen))
        else:
            angles = [i for i, layer in enumerate(layers) if _kind(layer) == "angle"]
            if angles:
                self.layer_combo.setCurrentIndex(angles[0])

    def chosen_layer(self) -> Image:
        """The layer chosen in the list.

        Raises
        ------
        fusemycell.errors.UserError
            When there is none, or it has been removed from the viewer since.
        """
        layer = self.layer_combo.currentData()
        if layer is None:
            raise UserError("no image layer to predict: open a single view (File > Open, or File > Open Sample)")
        if layer not in list(self.viewer.layers):
            raise UserError("layer {name!r} is no longer in the viewer", name=layer.name)
        return layer

    # ------------------------------------------------------------------ options
    def options(self) -> PredictionOptions:
        """The prediction options set in the widget (a bad tile raises a UserError saying what a tile is)."""
        return PredictionOptions(
            model=self.model_edit.text().strip(),
            tile_zyx=parse_tile(self.tile_edit.text()),
            tta=self.tta_check.isChecked(),
            backend=self.backend_combo.currentText(),  # type: ignore[arg-type]
            device=self.device_combo.currentText(),  # type: ignore[arg-type]
            outside_training=self.outside_combo.currentText(),  # type: ignore[arg-type]
            project_dir=self.project_dir,
        )

    def _browse(self) -> None:
        start = self.project_dir / Path(DEFAULT_MODEL).parent
        path, _ = QFileDialog.getOpenFileName(self, "Model file", str(start), "fusemycell models (*.pt)")
        if path:
            self.model_edit.setText(path)

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a prediction is running."""
        return self.worker is not None

    def start(self) -> None:
        """Predict the chosen layer in a worker thread (errors in the options are shown, nothing starts)."""
        if self.running:
            return
        try:
            layer = self.chosen_layer()
            options = self.options()
        except UserError as exc:
            self._show_error(exc.message(CONTROL_NAMES))
            return
        data = layer.data[0] if layer.multiscale else layer.data  # full resolution
        stored = (layer.metadata.get("fusemycell") or {}).get("spacing_zyx")
        spacing = tuple(stored) if stored else known_spacing(layer.scale)
        self._cancel = threading.Event()
        self.worker = create_worker(
            _predict_and_measure,
            data,
            spacing,
            options,
            name=layer.name,
            on_progress=self.tile_progress.update.emit,
            cancel=self._cancel,
            _start_thread=False,
            _ignore_errors=True,  # shown in the widget, not re-raised in the viewer
        )
        self.worker.returned.connect(lambda result: self._add_prediction(layer, options, result))
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_bar.setRange(0, 0)  # busy until the first tiles are counted
        unknown = "" if spacing else " (voxel size unknown: the training data's is assumed)"
        self._show(f"loading the model and reading {layer.name}{unknown}...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the running prediction after its current batch of tiles."""
        if self.running:
            self._cancel.set()
            self.cancel_button.setEnabled(False)
            self._show("cancelling after the current batch of tiles...")

    def _on_progress(self, update: ProgressUpdate) -> None:
        if self._cancel.is_set():
            return
        if update.total:
            self.progress_bar.setRange(0, int(update.total))
            self.progress_bar.setValue(int(update.count))
            self._show(f"{update.description}: {update.count} of {update.total} tiles")
        else:
            self.progress_bar.setRange(0, 0)
            self._show(f"{update.description}...")

    def _add_prediction(self, layer: Image, options: PredictionOptions, result: Any) -> None:
        prediction, limits, seconds, check = result
        info = dict(layer.metadata.get("fusemycell") or {})
        info.update(kind="prediction", model=options.model_location(), backend=options.backend, input=layer.name)
        outside = check is not None and check.outside
        if outside:
            info["outside_training"] = str(check.line())
        added = self.viewer.add_image(
            prediction,
            name=prediction_name(layer.name),
            scale=tuple(layer.scale),
            translate=tuple(layer.translate),
            units=tuple(str(u) for u in layer.units),
            axis_labels=tuple(layer.axis_labels),
            contrast_limits=limits,
            colormap="gray",
            metadata={"fusemycell": info},
        )
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        if outside:
            self._show_warning(f"{added.name}: done in {seconds:.1f} s. {in_words(check.line(), CONTROL_NAMES)}")
        else:
            self._show(f"{added.name}: done in {seconds:.1f} s")

    def _on_error(self, exc: BaseException) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        if isinstance(exc, PredictionCancelled):
            self._show("cancelled")
        elif (user := find_user_error(exc)) is not None:
            self._show_error(user.message(CONTROL_NAMES))
        else:  # a bug (or a library's failure, a disk's): the message here, the traceback in the log
            logger.error("Predict fused view failed", exc_info=(type(exc), exc, exc.__traceback__))
            self._show_error(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _show(self, text: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text)

    def _show_warning(self, text: str) -> None:
        self.status.setStyleSheet("color: #e0a030;")
        self.status.setText(f"warning: {text}")

    def _show_error(self, text: str) -> None:
        self.status.setStyleSheet("color: #e05050;")
        self.status.setText(f"error: {text}")


def _kind(layer: Image) -> str | None:
    return (layer.metadata.get("fusemycell") or {}).get("kind")
