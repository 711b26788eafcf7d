"""An input outside the training domain: one line naming what is outside, and each ``outside_training`` mode."""

import json
import logging

import numpy as np
import pytest
import torch

from fusemycell.errors import UserError, in_words
from fusemycell.inference.apply import InferenceSettings, predict_in_memory
from fusemycell.inference.outside import (
    DomainCheck,
    OutsideTrainingError,
    ResidualBaseBackend,
    check_array,
    check_measurement,
)
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.domain import InputMeasurement, TrainingDomain, ValueRange
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D

SPACING = (2.0, 0.5, 0.5)
DOMAIN = TrainingDomain(
    volumes=2,
    spacing_zyx_um=(ValueRange(low=1.0, high=2.0), ValueRange(low=0.5, high=0.5), ValueRange(low=0.5, high=0.5)),
    shape_zyx=(ValueRange(low=8, high=12), ValueRange(low=24, high=32), ValueRange(low=24, high=32)),
)


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, spacing_zyx=SPACING, residual_blur_sigma=1.0)
    network = UNet3D(config)
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a correction far from zero
    return TrainedModel(network, card_for(config, (8, 16, 16), training_domain=DOMAIN))


def _volume(seed=0):
    return np.random.default_rng(seed).integers(100, 3000, (10, 28, 28)).astype(np.uint16)


def test_the_line_names_the_file_the_property_its_value_and_the_range(model):
    check = check_measurement(model.card, InputMeasurement(spacing_zyx=(3.0, 0.5, 0.5)), "image_3_nucleus_angle.tif")
    assert check.outside and not check.uses_base
    assert check.line() == (
        "image_3_nucleus_angle.tif: voxel size z 3.0 um is outside the training range 1.0-2.0 um; "
        "the prediction may be worse than the input"
    )
    refused = check_measurement(model.card, InputMeasurement(spacing_zyx=(3.0, 0.5, 0.5)), "a.tif", "refuse")
    with pytest.raises(OutsideTrainingError, match=r"a\.tif: voxel size z 3\.0 um .* skipped"):
        refused.raise_if_refused()
    record = refused.record()
    assert record["action"] == "skipped" and record["outside"][0]["property"] == "voxel size z"


def test_the_line_and_the_refusal_name_the_mode_in_each_commands_words(model):
    measured = InputMeasurement(spacing_zyx=(3.0, 0.5, 0.5))
    names = {"inference.outside_training": "--outside-training"}
    base = check_measurement(model.card, measured, "a.tif", "base").line()
    assert base.endswith("instead of the prediction (inference.outside_training: base)")
    assert in_words(base, names).endswith("instead of the prediction (--outside-training base)")
    assert json.loads(json.dumps({"line": base})) == {"line": str(base)}  # written to the report as text
    with pytest.raises(OutsideTrainingError) as refused:
        check_measurement(model.card, measured, "a.tif", "refuse").raise_if_refused()
    assert isinstance(refused.value, UserError) and "(inference.outside_training: refuse;" in str(refused.value)
    assert "(--outside-training refuse; warn or base would predict it)" in refused.value.message(names)


def test_a_model_without_a_domain_checks_nothing(model):
    older = TrainedModel(model.network, model.card.model_copy(update={"training_domain": None}))
    check = check_array(_volume(), older.card, (9.0, 9.0, 9.0), "x", "refuse")
    assert not check.checked and not check.outside
    check.raise_if_refused()  # nothing to refuse


def test_the_residual_base_backend_is_the_networks_base(model):
    batch = np.random.default_rng(1).random((2, 1, 8, 16, 16)).astype(np.float32)
    expected = model.network.residual_base(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(ResidualBaseBackend(model.card.architecture, "cpu")(batch), expected, atol=1e-6)
    assert not np.allclose(expected, batch)  # a blur, not the input
    plain = UNetConfig(depth=2, base_channels=4, residual=False)
    np.testing.assert_array_equal(ResidualBaseBackend(plain, "cpu")(batch), batch)


def test_each_mode_on_an_in_memory_volume(model, caplog):
    volume = _volume()
    outside = (3.0, 0.5, 0.5)

    def predict(mode, spacing):
        settings = InferenceSettings(device="cpu", amp=False, tile_zyx=(8, 16, 16), outside_training=mode)
        return predict_in_memory(volume, model, settings, spacing_zyx=spacing, name="v.tif")

    inside = predict("base", SPACING)  # inside the domain: every mode predicts
    with caplog.at_level(logging.WARNING, logger="fusemycell.inference.apply"):
        warned = predict("warn", outside)
    assert [r.getMessage() for r in caplog.records if "outside the training range" in r.getMessage()] == [
        "v.tif: voxel size z 3.0 um is outside the training range 1.0-2.0 um; "
        "the prediction may be worse than the input"
    ]
    base = predict("base", outside)
    assert not np.array_equal(base, warned)
    # the base is what a model whose correction is scaled to 0 predicts (the guard's scale 0)
    scaled = model.card.architecture.model_copy(update={"residual_scale": 0.0})
    zero = TrainedModel(UNet3D(scaled), model.card.model_copy(update={"architecture": scaled}))
    zero.network.load_state_dict(model.network.state_dict())
    settings = InferenceSettings(device="cpu", amp=False, tile_zyx=(8, 16, 16))
    expected = predict_in_memory(volume, zero, settings, spacing_zyx=SPACING, name="v.tif")
    assert np.abs(base.astype(int) - expected.astype(int)).max() <= 1
    assert inside.shape == volume.shape
    with pytest.raises(OutsideTrainingError, match=r"v\.tif: voxel size z 3\.0 um"):
        predict("refuse", outside)


def test_a_callers_check_is_used_as_given(model):
    volume = _volume()
    settings = InferenceSettings(device="cpu", amp=False, tile_zyx=(8, 16, 16))
    given = DomainCheck("v.tif", "refuse", tuple(DOMAIN.departures(InputMeasurement(spacing_zyx=(3.0, 0.5, 0.5)))))
    with pytest.raises(OutsideTrainingError):
        predict_in_memory(volume, model, settings, spacing_zyx=SPACING, check=given)
