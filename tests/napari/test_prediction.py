"""The widget's prediction without Qt: the model found, the project's in-memory prediction, progress, cancel."""

import threading

import numpy as np
import pytest

from fusemycell.inference.apply import predict_in_memory
from fusemycell.inference.settings import InferenceSettings
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.models.model_file import CheckpointError, load_model
from fusemycell.napari.prediction import (
    PredictionCancelled,
    PredictionOptions,
    known_spacing,
    parse_tile,
    predict_volume,
    project_folder,
)
from fusemycell.napari.sample import simulated_pair
from tests.napari.conftest import SPACING_ZYX


@pytest.fixture(scope="module")
def single_view():
    return simulated_pair("nucleus", shape_zyx=(12, 40, 40))[0][0]


def test_the_prediction_is_the_projects_in_memory_prediction(model_file, single_view):
    options = PredictionOptions(model=str(model_file), tile_zyx=(8, 16, 16), tta=True, device="cpu")
    heard = []
    got = predict_volume(single_view, SPACING_ZYX, options, name="image_100_nucleus_angle", on_progress=heard.append)
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), tta=True)
    expected = predict_in_memory(single_view, load_model(model_file), settings, spacing_zyx=SPACING_ZYX)
    assert got.dtype == np.uint16 and got.shape == single_view.shape
    assert np.array_equal(got, expected)
    tiles = [u for u in heard if u.total]
    assert tiles and tiles[-1].count == tiles[-1].total  # every tile reported, the last one included
    assert heard[0].description == "reading image_100_nucleus_angle"  # before the tiles: the stages


def test_the_onnx_backend_uses_the_export_next_to_the_model(model_file, single_view):
    common = {"model": str(model_file), "tile_zyx": (8, 16, 16), "device": "cpu", "amp": False}  # float32 both
    torch_result = predict_volume(single_view, SPACING_ZYX, PredictionOptions(**common))
    onnx_result = predict_volume(single_view, SPACING_ZYX, PredictionOptions(backend="onnx", **common))
    assert np.abs(torch_result.astype(int) - onnx_result.astype(int)).max() <= 1  # float rounding, one grey level


def test_a_lazily_read_file_is_read_in_the_worker_and_predicts_the_same(tmp_path, model_file, single_view):
    path = write_volume(tmp_path / "image_100_nucleus_angle.tif", single_view, SPACING_ZYX)
    options = PredictionOptions(model=str(model_file), tile_zyx=(8, 16, 16), device="cpu")
    lazy = read_volume(path, lazy=True).data
    assert np.array_equal(predict_volume(lazy, SPACING_ZYX, options), predict_volume(single_view, SPACING_ZYX, options))


def test_cancel_stops_between_two_batches_of_tiles(model_file, single_view):
    cancel = threading.Event()
    counts, totals = [], []

    def cancel_after_the_first_batch(update):
        counts.append(update.count)
        totals.append(update.total)
        if update.total and update.count >= 1:
            cancel.set()

    options = PredictionOptions(model=str(model_file), tile_zyx=(15, 34, 34), device="cpu")  # 16 exact tiles
    with pytest.raises(PredictionCancelled):
        predict_volume(single_view, SPACING_ZYX, options, on_progress=cancel_after_the_first_batch, cancel=cancel)
    assert 1 <= counts[-1] <= 4 < totals[-1]  # one batch (at most 4 tiles) of many: stopped at the next batch


def test_a_relative_model_path_is_found_in_the_project_and_missing_files_say_so(tmp_path, model_file, single_view):
    project = tmp_path / "project"
    (project / "conf").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[tool.kedro]\n")
    (project / "notebooks").mkdir()
    assert project_folder(project / "notebooks") == project.resolve()
    assert project_folder(tmp_path) == tmp_path.resolve()  # no project: the folder itself
    missing = PredictionOptions(project_dir=project)  # the default, data/06_models/fusemycell_unet.pt
    with pytest.raises(FileNotFoundError, match=r"data/06_models/fusemycell_unet\.pt: no model file there"):
        predict_volume(single_view, SPACING_ZYX, missing)
    (project / "data" / "06_models").mkdir(parents=True)
    (project / "data" / "06_models" / "fusemycell_unet.pt").write_bytes(model_file.read_bytes())
    assert predict_volume(single_view, SPACING_ZYX, PredictionOptions(project_dir=project, device="cpu")).shape == (
        single_view.shape
    )
    no_export = PredictionOptions(project_dir=project, backend="onnx")
    with pytest.raises(FileNotFoundError, match=r"fusemycell_unet\.onnx: no ONNX export next to the model"):
        predict_volume(single_view, SPACING_ZYX, no_export)
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        predict_volume(single_view, SPACING_ZYX, PredictionOptions(model=str(not_a_model)))
    with pytest.raises(FileNotFoundError, match="no model chosen"):
        predict_volume(single_view, SPACING_ZYX, PredictionOptions(model=" "))


def test_a_volume_that_is_not_3d_is_refused_naming_the_layer(model_file):
    with pytest.raises(ValueError, match=r"photo: a layer of shape \(20, 30\); the model predicts 3D volumes"):
        predict_volume(np.zeros((20, 30), np.uint16), None, PredictionOptions(model=str(model_file)), name="photo")


def test_tiles_and_voxel_sizes_as_the_widget_reads_them():
    assert parse_tile("") is None and parse_tile("  ") is None
    assert parse_tile("32, 128, 128") == parse_tile("32x128x128") == parse_tile("32 128 128") == (32, 128, 128)
    for bad in ("32, 128", "a, b, c", "0, 16, 16"):
        with pytest.raises(ValueError, match="three sizes in voxels, z, y, x"):
            parse_tile(bad)
    assert known_spacing((1.0, 1.0, 1.0)) is None  # napari's default scale: the voxel size is not known
    assert known_spacing((2.0, 0.39, 0.39)) == (2.0, 0.39, 0.39)


def test_an_mlflow_run_uri_is_fetched_from_the_tracking_server_in_force(tmp_path, monkeypatch, model_file, single_view):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}")
    mlflow.set_tracking_uri(None)  # follow the environment, as a fresh napari does
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(model_file), artifact_path="model")
        mlflow.log_artifact(str(model_file.with_suffix(".onnx")), artifact_path="model")
    uri = f"runs:/{run.info.run_id}/model/fusemycell_unet.pt"
    local = PredictionOptions(model=str(model_file), tile_zyx=(8, 16, 16), device="cpu", amp=False)
    from_mlflow = PredictionOptions(model=uri, tile_zyx=(8, 16, 16), device="cpu", amp=False)
    expected = predict_volume(single_view, SPACING_ZYX, local)
    assert np.array_equal(predict_volume(single_view, SPACING_ZYX, from_mlflow), expected)
    onnx = predict_volume(single_view, SPACING_ZYX, PredictionOptions(model=uri, backend="onnx", tile_zyx=(8, 16, 16)))
    assert np.abs(onnx.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(FileNotFoundError, match="could not fetch it from MLflow"):
        predict_volume(single_view, SPACING_ZYX, PredictionOptions(model="runs:/0123456789abcdef/model/none.pt"))


def test_a_layer_outside_the_training_domain_is_told_and_each_mode_applies(narrow_model_file, single_view):
    from fusemycell.inference.outside import OutsideTrainingError

    outside = (3.0, 0.39, 0.39)
    heard = []
    options = PredictionOptions(model=str(narrow_model_file), tile_zyx=(8, 16, 16), device="cpu")
    warned = predict_volume(single_view, outside, options, name="layer", on_check=heard.append)
    (check,) = heard
    assert check.outside and check.line().startswith("layer: voxel size z 3.0 um is outside the training range 1.0 um")
    inside = []
    predict_volume(single_view, SPACING_ZYX, options, on_check=inside.append)
    assert not inside[0].outside
    unknown = []
    predict_volume(single_view, None, options, on_check=unknown.append)  # a voxel size not known is not checked
    assert not unknown[0].outside
    base_options = PredictionOptions(
        model=str(narrow_model_file), tile_zyx=(8, 16, 16), device="cpu", outside_training="base"
    )
    assert not np.array_equal(predict_volume(single_view, outside, base_options), warned)
    refuse = PredictionOptions(model=str(narrow_model_file), device="cpu", outside_training="refuse")
    with pytest.raises(OutsideTrainingError, match="layer: voxel size z 3.0 um"):
        predict_volume(single_view, outside, refuse, name="layer")
