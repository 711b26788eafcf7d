import numpy as np
import pytest
import tifffile
import torch

from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
from fusemycell.inference.onnx_backend import OnnxBackend, export_onnx
from fusemycell.io.tiff import read_volume, save_volume, write_volume
from fusemycell.models.card import card_for
from fusemycell.models.checkpoint import TrainedModel
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D


@pytest.fixture
def model():
    torch.manual_seed(0)
    config = UNetConfig(depth=3, base_channels=4, spacing_zyx=(2.0, 0.5, 0.5), residual_blur_sigma=0.5)
    network = UNet3D(config)
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    return TrainedModel(network, card_for(config, (8, 16, 16)))


def test_onnx_runtime_matches_pytorch_on_an_odd_shape(tmp_path, model):
    path = export_onnx(model, tmp_path / "m.onnx")
    volume = np.random.default_rng(0).random((2, 1, 7, 19, 23)).astype(np.float32)
    expected = model.network.eval()(torch.from_numpy(volume)).detach().numpy()
    backend = OnnxBackend(path)
    got = backend(volume)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4
    assert backend.card == model.card


def test_prediction_keeps_the_input_format(tmp_path, model):
    data = np.random.default_rng(0).integers(100, 3000, (11, 45, 38)).astype(np.uint16)
    source = write_volume(
        tmp_path / "image_5_nucleus_angle.tif",
        data,
        (2.0, 0.5, 0.5),
        {"channel": "nucleus", "study": "s"},
        spelling="physicalsizex",
    )
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16))
    volume = predict_file(str(source), make_backend(model, settings), settings, model.card)
    out = save_volume(tmp_path / "out" / "image_5_nucleus_angle.tif", volume)
    written = read_volume(out)
    assert written.data.dtype == np.uint16 and written.shape == data.shape
    assert written.spacing_zyx == pytest.approx((2.0, 0.5, 0.5))
    assert written.metadata == read_volume(source).metadata
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff and tif.pages.first.is_tiled
        assert "physicalsizex=0.5" in tif.pages.first.description
        assert (
            tif.pages.first.tags["XResolution"].value == tifffile.TiffFile(source).pages.first.tags["XResolution"].value
        )


def test_torch_and_onnx_backends_give_the_same_file(tmp_path, model):
    data = np.random.default_rng(3).integers(100, 3000, (9, 30, 33)).astype(np.uint16)
    source = write_volume(tmp_path / "in.tif", data, (2.0, 0.5, 0.5))
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    outputs = []
    for backend in ("torch", "onnx"):
        settings = InferenceSettings(device="cpu", backend=backend, tile_zyx=(8, 16, 16))
        volume = predict_file(str(source), make_backend(model, settings, str(onnx_path)), settings, model.card)
        outputs.append(
            np.asarray(
                save_volume(tmp_path / f"{backend}.tif", volume) and read_volume(tmp_path / f"{backend}.tif").data,
                dtype=np.int32,
            )
        )
    assert np.abs(outputs[0] - outputs[1]).max() <= 1  # rounding to uint16 may differ by one level


def test_crop_to_specimen_fills_the_background(tmp_path, model):
    data = np.full((30, 60, 60), 100, np.uint16)
    data[12:16, 25:35, 25:35] = 3000
    source = write_volume(tmp_path / "in.tif", data, (1.0, 1.0, 1.0))
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), crop_to_specimen=True)
    volume = predict_file(str(source), make_backend(model, settings), settings, model.card)
    planes = np.stack([volume.data[z] for z in range(30)])
    assert planes.shape == data.shape
    # the box is the blob plus a 4 um margin: z 8-20, y and x 21-39; outside it, the background level
    background = planes[0, 0, 0]
    assert (planes[:8] == background).all() and (planes[20:] == background).all()
    assert (planes[:, :21] == background).all() and (planes[:, :, 39:] == background).all()
    assert len(np.unique(planes[14, 21:39, 21:39])) > 10  # inside: the network's prediction
