"""The model file's dataset at a location fsspec opens (s3://, memory://, ...), and what it says about bad files."""

import fsspec
import pytest
import torch
from kedro.io.core import DatasetError

from fusemycell.datasets.model_dataset import TorchModelDataset
from fusemycell.errors import find_user_error
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import CheckpointError, TrainedModel, load_model
from fusemycell.models.unet import UNet3D


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4)
    return TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))


@pytest.fixture
def memory():
    filesystem = fsspec.filesystem("memory")
    yield filesystem
    filesystem.rm("/fusemycell-test", recursive=True) if filesystem.exists("/fusemycell-test") else None


def test_a_model_at_an_fsspec_uri_round_trips_and_is_not_taken_for_a_local_path(tmp_path, model, memory, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a local path "memory:/..." would be written here
    uri = "memory://fusemycell-test/models/fusemycell_unet.pt"
    dataset = TorchModelDataset(filepath=uri)
    assert dataset._describe() == {"filepath": uri}  # the "//" kept: s3://bucket/x.pt stays a URI
    assert not dataset.exists()
    dataset.save(model)
    assert dataset.exists() and memory.isfile("/fusemycell-test/models/fusemycell_unet.pt")
    assert list(tmp_path.iterdir()) == []  # nothing written to a local look-alike path
    loaded = dataset.load()
    assert loaded.card == model.card
    volume = torch.rand(1, 1, 4, 8, 8)
    assert torch.equal(loaded.network.eval()(volume), model.network.eval()(volume))
    assert load_model(uri).card == model.card  # the napari widget and the scripts read URIs the same way


def test_a_missing_or_unreadable_uri_names_it_and_the_setting(memory):
    with pytest.raises(DatasetError) as missing:
        TorchModelDataset(filepath="memory://fusemycell-test/none.pt").load()
    error = find_user_error(missing.value)
    assert isinstance(error, CheckpointError)
    message = error.message({"inference.model_uri": "--model"})
    assert message.startswith("memory://fusemycell-test/none.pt: file not found") and "--model" in message
    with pytest.raises(DatasetError) as unknown:
        TorchModelDataset(filepath="nosuchprotocol://bucket/model.pt").load()
    error = find_user_error(unknown.value)
    assert isinstance(error, CheckpointError) and "nosuchprotocol://bucket/model.pt: cannot read it" in str(error)
    assert "inference.model_uri" in str(error)
    assert TorchModelDataset(filepath="nosuchprotocol://bucket/model.pt").exists()  # load() says what is wrong


def test_a_bad_file_at_a_uri_is_named_for_what_it_is(memory):
    with fsspec.open("memory://fusemycell-test/image.pt", "wb") as handle:
        handle.write(b"II*\x00" + bytes(200))
    with pytest.raises(DatasetError) as raised:
        TorchModelDataset(filepath="memory://fusemycell-test/image.pt").load()
    assert "memory://fusemycell-test/image.pt: a TIFF image" in str(find_user_error(raised.value))


def test_no_local_model_yet_says_how_to_make_one(tmp_path):
    with pytest.raises(DatasetError) as raised:
        TorchModelDataset(filepath=str(tmp_path / "fusemycell_unet.pt")).load()
    message = find_user_error(raised.value).message({"inference.model_uri": "--model"})
    assert "no trained model yet" in message and "kedro run --pipelines training" in message and "--model" in message
