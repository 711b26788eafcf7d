import numpy as np
import pytest
import torch

from fusemycell.inference.predictor import FlipAveraging, StreamingPrediction, TorchBackend, predict_array
from fusemycell.io.tiff import read_volume, write_volume
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D


def identity(batch):
    return batch.copy()


@pytest.mark.parametrize("shape", [(20, 37, 29), (5, 9, 11), (1, 64, 64), (33, 16, 70)])
def test_identity_network_returns_the_input(shape):
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    out = predict_array(volume, identity, (8, 16, 16), overlap=0.5, batch_size=3)
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-6)


def _network():
    torch.manual_seed(0)
    network = UNet3D(UNetConfig(depth=2, base_channels=4, residual=False))
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return network


def test_streaming_from_a_file_equals_in_memory_prediction(tmp_path):
    volume = np.random.default_rng(1).random((19, 40, 36)).astype(np.float32)
    path = write_volume(tmp_path / "v.tif", volume, (1, 1, 1))
    backend = TorchBackend(_network(), device="cpu")
    in_memory = predict_array(volume, backend, (8, 16, 16), overlap=0.5)
    stream = StreamingPrediction(read_volume(path, lazy=True).data, backend, (8, 16, 16), overlap=0.5)
    streamed = np.stack([stream[z] for z in range(19)])
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-5, atol=1e-6)
    # the accumulation window never holds the volume: at most two rows of tiles
    assert stream.peak_window_planes <= 2 * 8


def test_planes_must_be_read_in_order():
    stream = StreamingPrediction(np.zeros((10, 8, 8), np.float32), identity, (4, 8, 8))
    stream[5]
    with pytest.raises(IndexError, match="already handed out"):
        stream[2]


def test_overlap_blending_smooths_tile_seams():
    """A network that adds its tile's origin exposes seams; Gaussian blending keeps every voxel a weighted mean."""
    calls = []

    def biased(batch):
        calls.append(len(batch))
        return batch + 1.0

    volume = np.zeros((8, 40, 40), np.float32)
    out = predict_array(volume, biased, (8, 16, 16), overlap=0.5)
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)
    assert sum(calls) == len(
        __import__("fusemycell.inference.tiling", fromlist=["TileGrid"]).TileGrid((8, 40, 40), (8, 16, 16))
    )


def test_flip_averaging_of_an_equivariant_network_changes_nothing():
    volume = np.random.default_rng(2).random((1, 1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(FlipAveraging(identity)(volume), volume, rtol=1e-6)
    shifted = FlipAveraging(lambda b: np.roll(b, 1, axis=-1))(volume)
    assert not np.allclose(shifted, np.roll(volume, 1, axis=-1))  # a non-equivariant net is averaged
