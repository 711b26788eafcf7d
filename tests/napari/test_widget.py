"""The "Predict fused view" widget, headless: a prediction layer on the input's grid, progress, cancel, errors.

The viewer is napari's ``ViewerModel`` (layers without an OpenGL canvas, which Qt's offscreen
platform cannot give); the widget uses only its layers. pytest-qt fails a test on any exception
that reaches Qt, so "errors are shown in the widget" also means "nothing is raised in the viewer".
"""

import threading

import numpy as np
import pytest
from napari.components import ViewerModel
from qtpy.QtCore import Qt

from fusemycell.inference.apply import predict_in_memory
from fusemycell.inference.settings import InferenceSettings
from fusemycell.models.model_file import load_model
from fusemycell.napari.sample import simulated_pair
from fusemycell.napari.widget import PredictWidget
from tests.napari.conftest import SPACING_ZYX

WAIT_MS = 120_000


@pytest.fixture
def viewer():
    viewer = ViewerModel()
    for data, kwargs, _ in simulated_pair("nucleus", shape_zyx=(12, 40, 40)):
        viewer.add_image(data, **kwargs)
    return viewer


@pytest.fixture
def widget(qtbot, viewer, model_file):
    widget = PredictWidget(viewer)
    qtbot.addWidget(widget)
    widget.model_edit.setText(str(model_file))
    widget.device_combo.setCurrentText("cpu")
    return widget


def _predict(qtbot, widget):
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)


def test_the_prediction_is_added_on_the_inputs_grid_with_progress_in_tiles(qtbot, widget, viewer, model_file):
    assert widget.layer_combo.currentText() == "image_100_nucleus_angle"  # the single view, chosen for you
    widget.tile_edit.setText("8, 16, 16")
    widget.tta_check.setChecked(True)
    values = []
    widget.progress_bar.valueChanged.connect(values.append)
    _predict(qtbot, widget)
    assert widget.status.text().startswith("image_100_nucleus_angle fused (predicted): done in")
    angle = viewer.layers["image_100_nucleus_angle"]
    prediction = viewer.layers["image_100_nucleus_angle fused (predicted)"]  # named as a prediction, not an input
    assert tuple(prediction.scale) == tuple(angle.scale) == SPACING_ZYX
    info = prediction.metadata["fusemycell"]
    assert info["kind"] == "prediction" and info["input"] == "image_100_nucleus_angle"
    assert info["model"] == str(model_file) and info["backend"] == "torch"  # the model that made it
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), tta=True)
    expected = predict_in_memory(np.asarray(angle.data), load_model(model_file), settings, spacing_zyx=SPACING_ZYX)
    assert prediction.data.dtype == np.uint16 and np.array_equal(prediction.data, expected)
    low, high = prediction.contrast_limits
    assert expected.min() <= low < high <= expected.max()
    tiles = values[:-1]  # then the bar is set full
    assert len(tiles) >= 2 and tiles == sorted(tiles) and tiles[-1] > tiles[0] > 0  # it moved on as tiles were done
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    assert widget.predict_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_the_list_of_layers_follows_the_viewer(qtbot, widget, viewer):
    names = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert names == ["image_100_nucleus_angle", "image_100_nucleus_fused"]
    viewer.add_image(np.zeros((4, 8, 8), np.uint16), name="other")
    viewer.add_points([[0, 0, 0]])  # not an image: not listed
    widget.layer_combo.setCurrentText("image_100_nucleus_fused")
    viewer.layers.remove("image_100_nucleus_angle")
    names = [widget.layer_combo.itemText(i) for i in range(widget.layer_combo.count())]
    assert names == ["image_100_nucleus_fused", "other"]
    assert widget.layer_combo.currentText() == "image_100_nucleus_fused"  # the choice is kept


def test_cancel_stops_the_prediction_between_batches_and_adds_nothing(qtbot, widget, viewer):
    widget.tile_edit.setText("12, 32, 32")  # 25 exact tiles
    release = threading.Event()
    counts = []

    def hold_the_worker(update):  # runs in the worker thread: it waits after the first batch
        counts.append(update.count)
        if update.total and update.count >= 1:
            release.wait(WAIT_MS / 1000)

    widget.tile_progress.update.connect(hold_the_worker, Qt.ConnectionType.DirectConnection)
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget.progress_bar.maximum() > 1, timeout=WAIT_MS)
    tiles = widget.progress_bar.maximum()
    assert widget.cancel_button.isEnabled() and not widget.predict_button.isEnabled()
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    release.set()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert widget.status.text() == "cancelled"
    assert max(counts) <= 8 and tiles > 16  # one more batch at most, of many tiles
    assert [layer.name for layer in viewer.layers] == ["image_100_nucleus_angle", "image_100_nucleus_fused"]
    assert widget.predict_button.isEnabled()


def test_a_missing_model_is_reported_in_the_widget(qtbot, widget, viewer, tmp_path):
    widget.model_edit.setText(str(tmp_path / "nowhere.pt"))
    _predict(qtbot, widget)
    assert widget.status.text() == f"error: {tmp_path / 'nowhere.pt'}: no model file there; " + (
        "train one ('kedro run' in the project folder) or choose another one in the model box"
    )
    assert "color" in widget.status.styleSheet() and len(viewer.layers) == 2
    assert widget.predict_button.isEnabled()


def test_a_bad_tile_and_a_2d_layer_are_reported_before_anything_runs(qtbot, widget, viewer):
    widget.tile_edit.setText("32, 128")
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert not widget.running and "error: tile '32, 128': give three sizes in voxels" in widget.status.text()
    widget.tile_edit.setText("")
    viewer.add_image(np.ones((20, 30), np.uint16), name="photo")
    widget.layer_combo.setCurrentText("photo")
    _predict(qtbot, widget)
    assert widget.status.text() == "error: photo: a layer of shape (20, 30); the model predicts 3D volumes (z, y, x)"


def test_no_image_layer_says_how_to_open_one(qtbot, model_file):
    widget = PredictWidget(ViewerModel())
    qtbot.addWidget(widget)
    qtbot.mouseClick(widget.predict_button, Qt.MouseButton.LeftButton)
    assert widget.status.text().startswith("error: no image layer to predict: open a single view")


def test_a_layer_outside_the_training_domain_shows_the_line(qtbot, widget, viewer, narrow_model_file):
    widget.model_edit.setText(str(narrow_model_file))
    widget.tile_edit.setText("8, 16, 16")
    angle = viewer.layers["image_100_nucleus_angle"]
    angle.scale = (3.0, 0.39, 0.39)
    angle.metadata.pop("fusemycell", None)  # the voxel size is the layer's scale
    _predict(qtbot, widget)
    text = widget.status.text()
    assert text.startswith("warning: image_100_nucleus_angle fused (predicted): done in"), text
    assert "image_100_nucleus_angle: voxel size z 3.0 um is outside the training range 1.0 um" in text
    prediction = viewer.layers["image_100_nucleus_angle fused (predicted)"]
    assert prediction.metadata["fusemycell"]["model"] == str(narrow_model_file)
    assert "voxel size z 3.0 um" in prediction.metadata["fusemycell"]["outside_training"]
    widget.outside_combo.setCurrentText("refuse")
    _predict(qtbot, widget)
    assert widget.status.text().startswith("error: image_100_nucleus_angle: voxel size z 3.0 um")
    assert widget.status.text().endswith("skipped (outside training refuse; warn or base would predict it)")
    widget.outside_combo.setCurrentText("base")  # the warning names the control too
    _predict(qtbot, widget)
    assert widget.status.text().endswith("instead of the prediction (outside training base)"), widget.status.text()
    assert "inference." not in widget.status.text()
