import pickle

import pytest
import torch

from fusemycell.models.checkpoint import CheckpointError, TrainedModel, load_model, safe_torch_load, save_model
from fusemycell.models.config import UNetConfig
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
    path = save_model(TrainedModel(network, config, {"patch_size_zyx": [8, 16, 16]}), tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.config == config
    assert loaded.config.pooling == [(1, 2, 2), (1, 2, 2)]
    assert loaded.metadata == {"patch_size_zyx": [8, 16, 16]}
    volume = torch.rand(1, 1, 5, 12, 12)
    assert torch.equal(loaded.network.eval()(volume), network.eval()(volume))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_a_pickled_object_is_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "fusemycell-unet", "payload": Malicious()}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused, it holds pickled Python objects"):
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"garbage", pickle.dumps({"a": 1})[:5]])
def test_broken_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pt"):
        safe_torch_load(path)


def test_other_files_are_not_models(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a fusemycell-unet model file"):
        load_model(path)
    with pytest.raises(CheckpointError, match="file not found"):
        load_model(tmp_path / "missing.pt")
