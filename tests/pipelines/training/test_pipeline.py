"""`kedro run --pipelines training --env test` through a real Kedro session, tracked in MLflow."""

import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fusemycell.errors import find_user_error
from fusemycell.models.model_file import load_model
from fusemycell.run_planning import MissingInputError
from tests.conftest import project_after, run_session

pytestmark = pytest.mark.slow  # whole pipeline chains, Kedro sessions or real processes

TRAINING_RUN = "tags.mlflow.runName = 'training (env test)'"  # runs are named after pipelines and env


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    return project_after(tmp_path_factory, "training", ["simulation", "preprocessing", "patching"], ["training"])


def test_model_and_reports_are_written(trained_project):
    model = load_model(trained_project / "data" / "06_models" / "fusemycell_unet.pt")
    card = model.card
    assert card.patch_size_zyx == (8, 16, 16) and card.default_tile_zyx == (8, 16, 16)  # tiles = the patch
    assert (card.normalization.low_percentile, card.normalization.high_percentile) == (2.0, 99.8)
    # resample.enabled: auto: the training volumes' finest planes (1 um of study a; study c has 3 um)
    assert card.preprocessing.resample_spacing_zyx == (1.0, 0.39, 0.39) and card.preprocessing.crop.enabled
    assert card.training_data.volumes >= 2 and set(card.training_data.channels) <= {"nucleus", "membrane"}
    assert card.training_data.acquisition_spacings_zyx and card.training_data.shapes_zyx
    assert card.validation is not None
    # the guard chose the correction's scale on whole validation volumes, never below the base (scale 0)
    assert card.guard is not None and card.guard.volumes >= 1
    assert card.architecture.residual_scale == card.guard.scale == min(card.guard.scale_by_channel.values())
    assert set(card.guard.scale_by_channel) <= {"nucleus", "membrane"}
    # scored per study at the chosen scales and at the base (choose_scale's rule is tested in tests/training)
    assert set(card.guard.val_nssim_by_study) == set(card.guard.base_nssim_by_study) != set()
    # the training domain: ranges over the raw training and validation single views, from the fingerprint
    domain = card.training_domain
    assert domain is not None and domain.volumes >= 2 and domain.noise is not None
    assert all(r.low <= r.high for r in domain.spacing_zyx_um) and {"2", "99_8"} <= set(domain.percentiles)
    assert model.config.depth == 2 and model.config.base_channels == 4
    # position channels are off by default: the single view alone
    assert [c.name for c in card.input_channels] == ["single_view"] and card.position is None
    # the epoch was chosen by the challenge's N_SSIM on whole validation volumes, recorded per epoch
    assert card.validation.monitor == "val_volume_nssim" and card.validation.val_volume_nssim is not None
    assert card.validation.val_volume_nssim == pytest.approx(history_best(trained_project, card.validation.epoch))
    history = pd.read_csv(trained_project / "data" / "08_reporting" / "training" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert list(history.loc[history["kept"], "epoch"]) == [card.validation.epoch]  # the learning curves mark it
    for figure in ("validation_slices.png", "learning_curves.png"):
        assert (trained_project / "data" / "08_reporting" / "training" / figure).stat().st_size > 1000


def history_best(project, epoch: int) -> float:
    history = pd.read_csv(project / "data" / "08_reporting" / "training" / "history.csv")
    assert history["val_volume_nssim"].notna().all()  # every epoch scored the whole volumes
    scores = dict(zip(history["epoch"], history["val_volume_nssim"]))
    assert scores[epoch] == max(scores.values())  # the chosen epoch is the best by that score
    return float(scores[epoch])


def test_mlflow_run_has_params_stepped_metrics_and_artifacts(trained_project):
    uri = f"sqlite:///{(trained_project / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["fusemycell"], filter_string=TRAINING_RUN)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    assert run["params.training.batch_size"] == "2"  # flattened parameters
    assert run["params.training.model.depth"] == "2"
    client = MlflowClient(uri)
    steps = [m.step for m in client.get_metric_history(run["run_id"], "val_nssim")]
    assert steps == [1, 2]
    for metric in (
        "train_loss",
        "val_loss",
        "val_ssim",
        "learning_rate",
        "epoch_time_s",
        "patches_per_s",
        "peak_rss_mb",
    ):
        assert len(client.get_metric_history(run["run_id"], metric)) == 2, metric
    assert run["metrics.memory.training.train_fusion_model.peak_rss_mb"] > 0  # the memory monitor's record
    artifacts = {a.path for a in client.list_artifacts(run["run_id"], "training")}
    assert {"training/validation_slices.png", "training/learning_curves.png", "training/history.csv"} <= artifacts
    assert {a.path for a in client.list_artifacts(run["run_id"], "model")} == {
        "model/fusemycell_unet.pt",
        "model/fusemycell_unet.onnx",
        "model/fusemycell_unet.bioimageio.zip",
    }


def test_training_without_patches_says_which_pipeline_to_run(kedro_project):
    with pytest.raises(MissingInputError) as raised:
        run_session(kedro_project, ["training"])
    assert "kedro run --pipelines simulation,preprocessing,patching,training --env test" in str(raised.value)
    assert find_user_error(raised.value) is raised.value  # printed as the user's problem, without a traceback


def test_training_run_logs_the_inference_pipeline_as_an_mlflow_model(trained_project):
    import numpy as np

    from fusemycell.io.formats import read_volume

    uri = f"sqlite:///{(trained_project / 'mlflow.db').as_posix()}"
    mlflow.set_tracking_uri(uri)
    run = mlflow.search_runs(experiment_names=["fusemycell"], filter_string=TRAINING_RUN).iloc[0]
    model = mlflow.pyfunc.load_model(f"runs:/{run['run_id']}/fusemycell_model")
    single_view = read_volume(trained_project / "data" / "01_raw" / "synthetic" / "image_2_nucleus_angle.tif").data
    prediction = model.predict(single_view)
    assert isinstance(prediction, np.ndarray)
    assert prediction.shape == single_view.shape and prediction.dtype == np.uint16
    assert not np.array_equal(prediction, single_view)
    # the MLflow model is the in-memory prediction: an array carries no voxel size and no file name, so it
    # is taken at the training data's voxel size and with the most cautious channel scale (documented)
    from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file, predict_in_memory

    trained = load_model(trained_project / "data" / "06_models" / "fusemycell_unet.pt")
    settings = InferenceSettings(device="cpu")
    in_memory = predict_in_memory(np.asarray(single_view), trained, settings)
    assert np.abs(prediction.astype(np.int32) - in_memory.astype(np.int32)).max() <= 1  # AMP off on CPU: exact
    # and given what the file says (its voxel size, its name), the in-memory route is the file pipeline
    path = trained_project / "data" / "01_raw" / "synthetic" / "image_2_nucleus_angle.tif"
    volume = read_volume(path)
    told = predict_in_memory(np.asarray(volume.data), trained, settings, spacing_zyx=volume.spacing_zyx, name=path.name)
    from_file = predict_file(str(path), make_backend(trained, settings), settings, trained.card).data
    expected = np.stack([from_file[z] for z in range(single_view.shape[0])])
    assert np.abs(told.astype(np.int32) - expected.astype(np.int32)).max() <= 1


def test_training_writes_a_bioimageio_package_that_bioimageio_core_validates(trained_project):
    from bioimageio.core import test_model

    package = trained_project / "data" / "06_models" / "fusemycell_unet.bioimageio.zip"
    assert not Path(f"{package}.not-exported.txt").exists()
    summary = test_model(package)
    assert summary.status == "passed", [(d.name, d.errors) for d in summary.details if d.status != "passed"]


def test_a_position_model_lists_its_channels_and_says_why_it_has_no_package(tmp_path):
    from tests.conftest import copy_project, run_session

    project = copy_project(tmp_path / "project")
    previous = os.getcwd()
    os.chdir(project)
    try:
        run_session(project, ["simulation", "preprocessing"])
        run_session(project, ["patching", "training"], patching={"position": {"enabled": True}})
    finally:
        os.chdir(previous)
    models = project / "data" / "06_models"
    card = load_model(models / "fusemycell_unet.pt").card
    # the position channels follow the single view, as the card lists them
    assert [c.name for c in card.input_channels] == ["single_view", "surface_distance", "depth_z", "depth_x"]
    assert card.architecture.in_channels == 4 and card.position is not None and card.position.count == 3
    assert card.patch_size_zyx == (8, 16, 16)  # the override merged into the test env's patching group
    store = project / "data" / "05_model_input" / "patches" / "train"
    assert (store / "positions.npz").is_file()
    assert not (models / "fusemycell_unet.bioimageio.zip").exists()
    assert "position channels" in (models / "fusemycell_unet.bioimageio.zip.not-exported.txt").read_text()
