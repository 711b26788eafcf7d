import pickle

import pytest
import torch

from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import (
    CheckpointError,
    TrainedModel,
    load_model,
    safe_torch_load,
    save_model,
    upgrade_model_file,
)
from fusemycell.models.unet import UNet3D


class Malicious:
    """A pickled object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_config_and_weights_round_trip_through_the_file_alone(tmp_path):
    config = UNetConfig(depth=3, base_channels=4, spacing_zyx=(3.0, 0.4, 0.4), normalization="group")
    network = UNet3D(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_()
    path = save_model(TrainedModel(network, card_for(config, (8, 16, 16))), tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.config == config
    assert loaded.config.pooling == [(1, 2, 2), (1, 2, 2)]
    assert loaded.card == card_for(config, (8, 16, 16))
    volume = torch.rand(1, 1, 5, 12, 12)
    assert torch.equal(loaded.network.eval()(volume), network.eval()(volume))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_a_pickled_object_is_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fusemycell-unet", "payload": Malicious()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: a PyTorch file holding pickled Python objects") as refused:
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out
    assert "print" in str(refused.value)  # what it would have called
    assert "weights_only" not in str(refused.value)  # never PyTorch's advice to load it unsafely


@pytest.mark.parametrize("content", [b"", b"garbage", pickle.dumps({"a": 1})[:5]])
def test_broken_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt"):
        safe_torch_load(path)


def test_other_files_are_not_models(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "someone-else", "weights": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="other.pt: a PyTorch file holding a dict of format 'someone-else'"):
        load_model(path)
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "missing.pt")


def _version_1_payload(network, config):
    """A model file as the main branch wrote it before the model card (version 1)."""
    return {
        "format": "fusemycell-unet",
        "version": 1,
        "config": config.model_dump(mode="json"),
        "state_dict": network.state_dict(),
        "metadata": {
            "normalization": {"low_percentile": 1.0, "high_percentile": 99.5},
            "patch_size_zyx": [8, 16, 16],
            "spacing_zyx": [3.0, 0.4, 0.4],
            "train_patches": 12,
            "val_patches": 4,
            "best_epoch": 3,
            "val_nssim": 0.25,
            "val_ssim": 0.5,
        },
    }


def test_a_version_1_model_file_loads_as_a_card_and_can_be_upgraded(tmp_path):
    config = UNetConfig(depth=2, base_channels=4, spacing_zyx=(3.0, 0.4, 0.4))
    network = UNet3D(config)
    path = tmp_path / "old.pt"
    torch.save(_version_1_payload(network, config), path)
    loaded = load_model(path)
    card = loaded.card
    assert card.architecture == config and card.patch_size_zyx == (8, 16, 16) and card.default_tile_zyx == (8, 32, 32)
    assert (card.normalization.low_percentile, card.normalization.high_percentile) == (1.0, 99.5)
    assert card.preprocessing.resample_spacing_zyx is None  # version 1 inference never resampled
    assert card.validation.epoch == 3 and card.validation.val_nssim == 0.25
    assert card.training_data.train_patches == 12
    volume = torch.rand(1, 1, 5, 12, 12)
    assert torch.equal(loaded.network.eval()(volume), network.eval()(volume))
    upgrade_model_file(path)
    assert safe_torch_load(path)["version"] == 2 and load_model(path).card == card


def test_a_model_file_of_an_unknown_version_is_refused_saying_what_to_do(tmp_path):
    config = UNetConfig(depth=2, base_channels=4)
    payload = {**TrainedModel(UNet3D(config), card_for(config)).payload(), "version": 7}
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=r"future.pt: model file version 7 is unknown.*python -m fusemycell"):
        load_model(tmp_path / "future.pt")
