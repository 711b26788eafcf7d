from dataclasses import replace

import numpy as np
import pytest
import torch

from fusemycell.inference.backends import FlipAveraging, TorchBackend
from fusemycell.inference.predictor import predict_array
from fusemycell.inference.streams import StreamingPrediction, StreamOptions
from fusemycell.inference.tiling import TileSettings
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D
from fusemycell.position import PositionChannels, position_field
from tests.inference.conftest import random_network
from tests.patching.conftest import textured_ellipsoid


def identity(batch):
    return batch.copy()


@pytest.mark.parametrize("shape", [(20, 37, 29), (5, 9, 11), (1, 64, 64), (33, 16, 70)])
def test_identity_network_returns_the_input(shape):
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    out = predict_array(volume, identity, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5, batch_size=3))
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-6)


def test_streaming_from_a_file_equals_in_memory_prediction(tmp_path):
    volume = np.random.default_rng(1).random((19, 40, 36)).astype(np.float32)
    path = write_volume(tmp_path / "v.tif", volume, (1, 1, 1))
    backend = TorchBackend(random_network(), device="cpu")
    in_memory = predict_array(volume, backend, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5))
    stream = StreamingPrediction(
        read_volume(path, lazy=True).data, backend, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5)
    )
    streamed = np.stack([stream[z] for z in range(19)])
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-5, atol=1e-6)
    # the accumulation window never holds the volume: at most two rows of tiles
    assert stream.peak_window_planes <= 2 * 8


def test_planes_must_be_read_in_order():
    stream = StreamingPrediction(np.zeros((10, 8, 8), np.float32), identity, TileSettings(tile_zyx=(4, 8, 8)))
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
    out = predict_array(volume, biased, TileSettings(tile_zyx=(8, 16, 16), overlap=0.5))
    np.testing.assert_allclose(out, 1.0, rtol=1e-5)
    assert sum(calls) == len(
        __import__("fusemycell.inference.tiling", fromlist=["TileGrid"]).TileGrid((8, 40, 40), (8, 16, 16))
    )


def test_flip_averaging_of_an_equivariant_network_changes_nothing():
    volume = np.random.default_rng(2).random((1, 1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(FlipAveraging(identity)(volume), volume, rtol=1e-6)
    shifted = FlipAveraging(lambda b: np.roll(b, 1, axis=-1))(volume)
    assert not np.allclose(shifted, np.roll(volume, 1, axis=-1))  # a non-equivariant net is averaged


# --- position channels --------------------------------------------------------------------------------------


def _position_case():
    volume = textured_ellipsoid((14, 40, 36), seed=9)
    return volume, position_field(volume, (1.0, 0.5, 0.5), PositionChannels(enabled=True))


@pytest.mark.parametrize("read_ahead", [False, True])
def test_the_backend_gets_each_tiles_position_channels_after_its_view(read_ahead):
    volume, field = _position_case()
    seen = []

    def recording(batch):
        seen.append(batch.copy())
        return batch[:, :1] * 2

    stream = StreamingPrediction(
        volume,
        recording,
        TileSettings(tile_zyx=(8, 16, 16), overlap=0.5, batch_size=3),
        position=field,
        options=StreamOptions(read_ahead=read_ahead),
    )
    out = np.stack([stream[z] for z in range(14)])
    np.testing.assert_allclose(out, 2 * volume, rtol=1e-5, atol=1e-6)  # only the view comes back
    tiles = np.concatenate(seen)
    assert tiles.shape[1:] == (4, 8, 16, 16) and len(tiles) == len(stream.grid)
    order = [(z, y, x) for z in stream.grid.starts[0] for y, x in stream.grid.yx_origins()]
    for (z, y, x), tile in zip(order, tiles):
        np.testing.assert_array_equal(tile[0], volume[z : z + 8, y : y + 16, x : x + 16])
        np.testing.assert_array_equal(tile[1:], field.region((z, y, x), (8, 16, 16)))


def test_predict_array_passes_the_position_field_and_a_tile_larger_than_the_volume_is_clipped():
    volume, field = _position_case()
    shapes = []

    def recording(batch):
        shapes.append(batch.shape)
        return batch[:, :1].copy()

    out = predict_array(volume, recording, TileSettings(tile_zyx=(32, 64, 64)), position=field)
    np.testing.assert_allclose(out, volume, rtol=1e-5, atol=1e-6)
    assert shapes == [(1, 4, 14, 40, 36)]


def test_a_network_with_position_inputs_runs_through_the_torch_backend():
    volume, field = _position_case()
    torch.manual_seed(0)
    network = UNet3D(UNetConfig(depth=2, base_channels=4, in_channels=4, residual=True))
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    backend = TorchBackend(network, device="cpu")
    out = predict_array(volume, backend, TileSettings(tile_zyx=(8, 16, 16)), position=field)
    assert out.shape == volume.shape and np.isfinite(out).all()
    # the position channels matter: a field of other values changes the prediction
    other = predict_array(
        volume, backend, TileSettings(tile_zyx=(8, 16, 16)), position=replace(field, coarse=field.coarse + 1.0)
    )
    assert np.abs(other - out).max() > 1e-3


def test_flip_averaging_returns_one_channel_for_a_batch_with_position_channels():
    batch = np.random.default_rng(3).random((2, 4, 4, 8, 8)).astype(np.float32)
    averaged = FlipAveraging(lambda b: b[:, :1].copy())(batch)
    np.testing.assert_allclose(averaged[:, :1], batch[:, :1], rtol=1e-6)
    assert averaged.shape == (2, 1, 4, 8, 8)


def test_blending_with_a_one_voxel_tile_is_refused_before_any_network_call():
    from fusemycell.errors import UserError
    from fusemycell.inference.predictor import predict_volume

    calls = []
    config = UNetConfig(normalization="instance", depth=2, base_channels=2, spacing_zyx=(1.0, 0.5, 0.5))
    with pytest.raises(UserError, match="too small to blend"):
        predict_volume(
            np.zeros((64, 128, 128), np.float32),
            lambda batch: calls.append(batch) or batch[:, :1],
            config,
            TileSettings(tiling="blend", tile_zyx=(1, 1, 1)),
            blend_tile=(8, 16, 16),
        )
    assert not calls
