import numpy as np
import pytest
import tifffile
import torch

from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file, predict_in_memory
from fusemycell.inference.onnx_backend import OnnxBackend, export_onnx
from fusemycell.inference.tiling import TileGrid
from fusemycell.inference.transform import InputTransform, scan_array
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume, write_volume
from fusemycell.models.card import InputChannel, card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel, load_model, save_model
from fusemycell.models.unet import UNet3D
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.position import CHANNEL_DESCRIPTIONS, PositionChannels
from tests.patching.conftest import position_store, textured_ellipsoid


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


def test_a_gain_and_offset_model_exports_to_onnx_and_answers_the_same(tmp_path):
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, spacing_zyx=(2.0, 0.5, 0.5), gain_offset=True, normalization="none")
    network = UNet3D(config)
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a gain far from 1 and an offset far from 0
    model = TrainedModel(network, card_for(config, (8, 16, 16)))
    path = export_onnx(model, tmp_path / "gain.onnx")
    volume = np.random.default_rng(1).random((1, 1, 9, 17, 21)).astype(np.float32)
    expected = model.network.eval()(torch.from_numpy(volume)).detach().numpy()
    assert np.abs(expected - volume).max() > 0.1  # the head changes the input
    got = OnnxBackend(path)(volume)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_a_missing_or_damaged_export_is_one_line_naming_the_file(tmp_path):
    from fusemycell.inference.onnx_backend import OnnxModelError

    with pytest.raises(OnnxModelError, match=r"gone.onnx: ONNX model file not found; check --params inference.onnx"):
        OnnxBackend(tmp_path / "gone.onnx")
    (tmp_path / "damaged.onnx").write_bytes(b"\x08\x07" + bytes(range(40)))
    with pytest.raises(OnnxModelError, match=r"damaged.onnx: not a readable ONNX model \(") as raised:
        OnnxBackend(tmp_path / "damaged.onnx")
    assert "\n" not in str(raised.value) and raised.value.__cause__ is None


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
        settings = InferenceSettings(device="cpu", backend=backend, tile_zyx=(8, 16, 16), amp=False)  # float32 both
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


# --- position channels end to end -------------------------------------------------------------------------

POSITION_CHANNELS = tuple(
    InputChannel(name=name, description=CHANNEL_DESCRIPTIONS[name]) for name in PositionChannels(enabled=True).channels
)


def _raw_specimen(shape=(12, 40, 36), seed=0):
    return (100 + 2900 * textured_ellipsoid(shape, seed=seed)).astype(np.uint16)


@pytest.fixture
def position_model():
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, in_channels=4, spacing_zyx=(2.0, 0.5, 0.5))
    network = UNet3D(config)
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    view = InputChannel(name="single_view", description="the single view")
    card = card_for(
        config, (8, 16, 16), input_channels=(view, *POSITION_CHANNELS), position=PositionChannels(enabled=True)
    )
    return TrainedModel(network, card)


@pytest.mark.parametrize("tta", [False, True])
def test_a_position_model_predicts_an_in_memory_volume(position_model, tta):
    data = _raw_specimen()
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16), tta=tta, background_io=False)
    out = predict_in_memory(data, position_model, settings, spacing_zyx=(2.0, 0.5, 0.5))
    assert out.shape == data.shape and out.dtype == np.uint16
    assert len(np.unique(out)) > 10


def test_a_position_model_file_round_trips_and_predicts_a_file(tmp_path, position_model):
    path = save_model(position_model, tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.card.position == PositionChannels(enabled=True) and loaded.config.in_channels == 4
    source = write_volume(tmp_path / "image_1_nucleus_angle.tif", _raw_specimen(seed=1), (2.0, 0.5, 0.5))
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16))
    volume = predict_file(str(source), make_backend(loaded, settings), settings, loaded.card)
    planes = np.stack([volume.data[z] for z in range(volume.shape[0])])
    assert planes.shape == (12, 40, 36) and planes.dtype == np.uint16


class _Recorder(torch.nn.Module):
    """A network that returns its single view and keeps every batch it was given."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, batch):
        self.batches.append(batch.detach().cpu().numpy().copy())
        return batch[:, :1]


def test_inference_gives_the_network_the_channels_training_gave_it(tmp_path, position_model):
    """The training store of a normalised view, and predict_in_memory of the raw view: same tile, same input."""
    data = _raw_specimen((12, 40, 36), seed=4)
    spacing = (2.0, 0.5, 0.5)
    card = position_model.card
    transform = InputTransform.from_card(card, scan_array(data, card, spacing, "x"))
    normalised = transform.network_input(data)[0:12]
    tile = (8, 16, 16)
    grid = TileGrid(data.shape, tile, 0.5)
    order = [(z, y, x) for z in grid.starts[0] for y, x in grid.yx_origins()]
    origins = [order[0], order[len(order) // 2], order[-1]]
    store = position_store(tmp_path / "store", normalised, spacing, origins, tile)
    dataset = PatchDataset(store)

    recorder = _Recorder()
    model = type("Model", (), {"network": recorder, "card": card})()
    settings = InferenceSettings(  # blended tiles: the training patches' grid
        device="cpu", tile_zyx=tile, batch_size=1, amp=False, background_io=False, tiling="blend"
    )
    predict_in_memory(data, model, settings, spacing_zyx=spacing)
    tiles = dict(zip(order, (b[0] for b in recorder.batches)))
    assert len(recorder.batches) == len(order)
    for row, origin in enumerate(origins):
        patch_input = dataset[row][0].numpy()
        np.testing.assert_allclose(tiles[origin][0], patch_input[0], atol=1e-6)
        np.testing.assert_allclose(tiles[origin][1:], patch_input[1:], atol=1e-6)


def test_an_export_is_used_only_with_the_model_it_was_exported_from(tmp_path, model):
    from fusemycell.inference.onnx_backend import OnnxModelError

    save_model(model, tmp_path / "m.pt")
    path = export_onnx(model, tmp_path / "m.onnx")
    OnnxBackend(path, model=load_model(tmp_path / "m.pt"))  # the model as read back from its file: the same identity

    torch.manual_seed(1)  # a new training run of the same architecture stopped before its export
    retrained = TrainedModel(UNet3D(model.config), model.card)
    with pytest.raises(OnnxModelError, match=r"m.onnx: it was exported from another model \(another training run"):
        OnnxBackend(path, model=retrained)
    other = UNetConfig(depth=2, base_channels=8, spacing_zyx=(2.0, 0.5, 0.5))
    architectures = r"another architecture \(depth 3, base_channels 4; the model given: depth 2,"
    with pytest.raises(OnnxModelError, match=architectures):
        OnnxBackend(path, model=TrainedModel(UNet3D(other), card_for(other, (8, 16, 16))))
    with pytest.raises(OnnxModelError) as refused:
        OnnxBackend(path, model=TrainedModel(model.network, card_for(model.config, (8, 32, 32))))  # another card
    message = refused.value.message({"inference.onnx_path": "--onnx"})
    assert "--onnx" in message and "inference.backend: torch" in message
    assert "kedro run --pipelines training --nodes training.export_onnx_model" in message


def test_every_consumer_makes_its_onnx_backend_with_the_identity_check(tmp_path, model):
    """make_backend (kedro run, fusemycell predict, napari, the MLflow model) refuses another model's export."""
    from fusemycell.inference.onnx_backend import OnnxModelError

    path = export_onnx(model, tmp_path / "m.onnx")
    settings = InferenceSettings(device="cpu", backend="onnx", tile_zyx=(8, 16, 16), amp=False)
    make_backend(model, settings, str(path))  # its own export
    torch.manual_seed(1)
    retrained = TrainedModel(UNet3D(model.config), model.card)
    with pytest.raises(OnnxModelError, match="exported from another model"):
        make_backend(retrained, settings, str(path))


def test_an_export_that_records_no_model_identity_is_refused(tmp_path, model):
    import onnx

    from fusemycell.inference.onnx_backend import DIGEST_KEY, OnnxModelError

    path = export_onnx(model, tmp_path / "old.onnx")
    exported = onnx.load(str(path))
    kept = [entry for entry in exported.metadata_props if entry.key != DIGEST_KEY]
    del exported.metadata_props[:]
    exported.metadata_props.extend(kept)
    onnx.save(exported, str(path))  # as exported before the identity was recorded
    assert OnnxBackend(path).card == model.card  # still readable alone
    with pytest.raises(OnnxModelError, match=r"old.onnx: it records no model identity"):
        OnnxBackend(path, model=model)


def test_an_export_is_read_from_an_fsspec_uri(tmp_path, model):
    import fsspec

    path = export_onnx(model, tmp_path / "m.onnx")
    uri = "memory://fusemycell-test-onnx/m.onnx"
    with fsspec.open(uri, "wb") as handle:
        handle.write(path.read_bytes())
    try:
        backend = OnnxBackend(uri, model=model)
        assert backend.path == uri and backend.card == model.card
    finally:
        fsspec.filesystem("memory").rm("/fusemycell-test-onnx", recursive=True)
