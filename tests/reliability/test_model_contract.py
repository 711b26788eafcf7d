"""What a model does with inputs and files at the edges of its contract (issue 10, items 6, 11, 14, 15).

Each test failed on the main branch before the model card: a flat input saturated the
output, negative float voxels were clipped to 0 silently, a zero tile failed every
file with NumPy's "zero-size array", and a foreign ``last.pt`` or a model file whose
weights disagree with its architecture crashed with a raw traceback.
"""

import logging

import numpy as np
import pytest
import torch
from kedro.io.core import DatasetError

from fusemycell.datasets.model_dataset import TorchModelDataset
from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
from fusemycell.inference.transform import output_mapping
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume, write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import CheckpointError, TrainedModel, load_model
from fusemycell.models.unet import UNet3D
from fusemycell.normalization import NormalizationStats
from fusemycell.training.config import TrainingConfig
from fusemycell.training.engine import BEST_MODEL, LAST_CHECKPOINT, train
from tests.training.conftest import make_store

SETTINGS = {"device": "cpu", "amp": False, "tile_zyx": (8, 16, 16)}


@pytest.fixture(scope="module")
def model() -> TrainedModel:
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=2, spacing_zyx=(1.0, 0.5, 0.5))
    return TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))


def _predict(path, model, **settings):
    chosen = InferenceSettings(**{**SETTINGS, **settings})
    written = save_volume(
        path.with_name("out_" + path.name), predict_file(str(path), make_backend(model, chosen), chosen, model.card)
    )
    return read_volume(written).data


# --- 6. a flat input ---------------------------------------------------------------------------------


def test_a_flat_input_is_normalised_robustly_with_a_warning_naming_it(tmp_path, model, caplog):
    data = np.full((10, 32, 32), 100, np.uint16)
    data[5, 10:12, 10:12] = 3000  # 4 bright voxels of 10240: p2 == p99.8 == 100, not constant
    path = write_volume(tmp_path / "image_1_nucleus_angle.tif", data, (1.0, 0.5, 0.5))
    with caplog.at_level(logging.WARNING, logger="fusemycell.inference.transform"):
        output = _predict(path, model)
    assert (output == 65535).mean() < 0.01  # was: every voxel 65535 (raw values into the network)
    assert output.std() > 0
    assert "image_1_nucleus_angle.tif" in caplog.text and "normalising the network input between 100 and 3000" in (
        caplog.text
    )


# --- 11. negative float voxels -----------------------------------------------------------------------


def test_negative_float_voxels_shift_the_output_into_uint16_with_a_warning(tmp_path, model, caplog):
    rng = np.random.default_rng(0)
    data = rng.normal(0, 200, (10, 32, 32)).astype(np.float32)  # half the voxels below 0
    path = write_volume(tmp_path / "image_2_nucleus_angle.tif", data, (1.0, 0.5, 0.5))
    with caplog.at_level(logging.WARNING, logger="fusemycell.inference.transform"):
        output = _predict(path, model, min_output_range=1)
    assert output.dtype == np.uint16
    assert (output == 0).mean() < 0.05  # was: about half the voxels clipped to 0 without a word
    low, high = np.percentile(data, [2, 99.8])
    # the documented range: percentile 2 of the input maps to 0, the input's span is kept (exactly, by the mapping;
    # the random network's output spreads differently, so the file's own span is only checked loosely)
    stats = NormalizationStats(low=float(low), high=float(high), p_low=2.0, p_high=99.8)
    assert output_mapping(stats, 1, "x") == pytest.approx((0.0, high - low))
    assert np.percentile(output, 99.8) - np.percentile(output, 2) == pytest.approx(high - low, rel=0.5)
    assert "image_2_nucleus_angle.tif" in caplog.text and "shifted so that percentile 2 maps to 0" in caplog.text


# --- 14. tile and patch sizes ------------------------------------------------------------------------


@pytest.mark.parametrize("tile", [(0, 16, 16), (8, -16, 16)])
def test_a_non_positive_tile_is_refused_before_any_file(model, tile):
    with pytest.raises(ValueError, match=r"tile_zyx"):  # by the settings, or by make_backend at the latest
        make_backend(model, InferenceSettings(**{**SETTINGS, "tile_zyx": tile}))


@pytest.mark.parametrize("field", ["default_tile_zyx", "patch_size_zyx"])
def test_a_model_file_with_a_non_positive_tile_or_patch_is_refused_naming_it(tmp_path, model, field):
    payload = model.payload()
    payload["card"][field] = [0, 16, 16]
    torch.save(payload, tmp_path / "bad_tile.pt")
    with pytest.raises(CheckpointError, match=rf"bad_tile.pt: invalid model card.*{field}"):
        load_model(tmp_path / "bad_tile.pt")


def test_a_version_1_model_file_with_a_zero_patch_is_refused_naming_it(tmp_path, model):
    payload = {
        "format": "fusemycell-unet",
        "version": 1,
        "config": model.config.model_dump(mode="json"),
        "state_dict": model.network.state_dict(),
        "metadata": {"patch_size_zyx": [8, 0, 16]},
    }
    torch.save(payload, tmp_path / "old_bad.pt")
    with pytest.raises(CheckpointError, match=r"old_bad.pt: invalid model card.*patch_size_zyx"):
        load_model(tmp_path / "old_bad.pt")


# --- 15. foreign checkpoints and model files ---------------------------------------------------------


def _config(tmp_path, **changes):
    values = {
        "device": "cpu",
        "epochs": 1,
        "batch_size": 2,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "model": {"depth": 2, "base_channels": 4},
        "monitor": "val_nssim",  # patch stores only, no whole volumes
        **changes,
    }
    return TrainingConfig(**values)


@pytest.fixture
def stores(tmp_path):
    return make_store(tmp_path / "train", 4, seed=0), make_store(tmp_path / "val", 2, seed=1)


def _foreign_optimizer(path):
    state = torch.load(path, weights_only=True)
    other = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    state["optimizer"] = other.state_dict()
    return state


FOREIGN = {
    "a bare tensor": (lambda path: torch.zeros(3), "not a fusemycell training checkpoint"),
    "a dict missing keys": (
        lambda path: {k: v for k, v in torch.load(path, weights_only=True).items() if k not in ("optimizer", "rng")},
        "missing optimizer, rng",
    ),
    "an optimizer state of another model": (_foreign_optimizer, "the optimizer state does not fit this model"),
    "weights of another architecture": (
        lambda path: {**torch.load(path, weights_only=True), "model": UNet3D(UNetConfig(depth=3)).state_dict()},
        "the model weights do not fit",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_foreign_last_checkpoint_is_refused_naming_it_and_nothing_is_overwritten(tmp_path, stores, case):
    train(_config(tmp_path), *stores)
    last = tmp_path / "ckpt" / LAST_CHECKPOINT
    make, phrase = FOREIGN[case]
    torch.save(make(last), last)
    (tmp_path / "ckpt" / BEST_MODEL).unlink()
    before = last.read_bytes()
    with pytest.raises(CheckpointError) as raised:
        train(_config(tmp_path, epochs=2, resume=True), *stores)
    assert str(last) in str(raised.value) and phrase in str(raised.value)
    assert "--params training.resume=false" in str(raised.value)  # what to do about it
    assert last.read_bytes() == before and not (tmp_path / "ckpt" / BEST_MODEL).exists()


def test_a_model_file_whose_weights_disagree_with_its_architecture_is_refused_naming_it(tmp_path, model):
    payload = model.payload()
    payload["card"]["architecture"]["base_channels"] = 8  # the weights are those of 2 base channels
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(DatasetError) as raised:
        TorchModelDataset(filepath=str(tmp_path / "mismatch.pt")).load()
    message = str(raised.value)
    assert "mismatch.pt: the weights do not fit the architecture it describes" in message
    assert "Traceback" not in message and len(message) < 800
