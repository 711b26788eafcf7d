"""Training on resampled volumes: the model card carries the resampling target and inference applies it.

On the main branch before the model card, the training node wrote no resampling
target, so inference fed the network the acquisition grid (``ResampledBack`` was
unreachable). These tests train with ``preprocessing.resample`` on anisotropic
data (z 1 and 3 um, xy 0.39 um) and check every step of the round trip.

The target, 0.6 um in y and x, does not divide the volumes' extent (42 x 0.39 um): the
network's grid is 0.606667 um, a voxel size that once made the bioimage.io export fail
after training (its description grew past the spec's 128 characters).
"""

import numpy as np
import pytest
import yaml

from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
from fusemycell.inference.transform import InputTransform, scan_input
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume
from fusemycell.models.model_file import load_model
from fusemycell.preprocessing.resample import resampled_shape
from tests.conftest import copy_project, run_session

pytestmark = pytest.mark.slow  # whole pipeline chains, Kedro sessions or real processes

TARGET = [1.0, 0.6, 0.6]


@pytest.fixture(scope="module")
def resampled_project(tmp_path_factory):
    import os

    project = copy_project(tmp_path_factory.mktemp("resampled") / "project")
    parameters = project / "conf" / "test" / "parameters.yml"
    values = yaml.safe_load(parameters.read_text())
    values["preprocessing"]["resample"] = {"enabled": True, "target_spacing_zyx": TARGET}
    parameters.write_text(yaml.safe_dump(values))
    previous = os.getcwd()
    os.chdir(project)
    try:
        run_session(project, ["simulation", "preprocessing", "patching"])
        run_session(project, ["training"])
    finally:
        os.chdir(previous)
    return project


def test_the_patches_and_the_card_carry_the_resampling_target(resampled_project):
    import json

    store = json.loads((resampled_project / "data" / "05_model_input" / "patches" / "train" / "store.json").read_text())
    assert store["preprocessing"]["resample_spacing_zyx"] == TARGET
    card = load_model(resampled_project / "data" / "06_models" / "fusemycell_unet.pt").card
    assert card.preprocessing.resample_spacing_zyx == tuple(TARGET)
    assert card.spacing_zyx == pytest.approx(TARGET, rel=0.1)  # the network's grid is the resampled one
    assert {s[0] for s in card.training_data.acquisition_spacings_zyx} <= {1.0, 3.0}


def test_inference_resamples_to_the_training_grid_and_back(resampled_project):
    model = load_model(resampled_project / "data" / "06_models" / "fusemycell_unet.pt")
    source = resampled_project / "data" / "01_raw" / "synthetic" / "image_2_nucleus_angle.tif"  # z 3 um
    raw = read_volume(source)
    transform = InputTransform.from_card(model.card, scan_input(str(source), model.card))
    network_grid = transform.network_input(str(source)).shape
    assert network_grid == resampled_shape(raw.shape, raw.spacing_zyx, TARGET) != raw.shape
    settings = InferenceSettings(device="cpu")
    written = save_volume(
        resampled_project / "out" / source.name,
        predict_file(str(source), make_backend(model, settings), settings, model.card),
    )
    prediction = read_volume(written)
    assert prediction.shape == raw.shape and prediction.spacing_zyx == raw.spacing_zyx
    assert prediction.data.dtype == np.uint16 and prediction.data.std() > 0


def test_the_run_completes_with_a_bioimageio_package_whose_voxel_size_reads_for_people(resampled_project):
    import zipfile

    models = resampled_project / "data" / "06_models"
    card = load_model(models / "fusemycell_unet.pt").card
    assert card.spacing_zyx[1] != pytest.approx(0.6, abs=1e-3)  # the target does not divide the extent
    package = models / "fusemycell_unet.bioimageio.zip"
    assert package.is_file() and not (models / "fusemycell_unet.bioimageio.zip.not-exported.txt").exists()
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        documentation = archive.read("README.md").decode()
    description = rdf["inputs"][0]["description"]
    voxel = f"{card.spacing_zyx[0]:.3g} x {card.spacing_zyx[1]:.3g} x {card.spacing_zyx[2]:.3g} um"
    assert len(description) <= 128 and voxel in description and voxel in documentation
