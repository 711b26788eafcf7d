"""Exact tiling: a tile-invariant network predicts the same volume whatever the tiles, as if whole."""

import numpy as np
import pytest
import torch

from fusemycell.errors import UserError
from fusemycell.inference.apply import check_tiling, predict_file, predict_in_memory
from fusemycell.inference.backends import FlipAveraging, TorchBackend
from fusemycell.inference.memory_plan import HostLoad, host_bytes
from fusemycell.inference.onnx_backend import OnnxBackend, export_onnx
from fusemycell.inference.predictor import TilingError, predict_volume, read_all
from fusemycell.inference.settings import InferenceSettings
from fusemycell.inference.streams import ExactPrediction, StreamOptions
from fusemycell.inference.tiling import (
    HaloGrid,
    TileSettings,
    exact_grid,
    halo_spans,
    plan_cores,
    recommended_tile,
)
from fusemycell.inference.transform import InputTransform, scan_input
from fusemycell.io.tiff import write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.receptive_field import halo
from fusemycell.models.unet import UNet3D
from fusemycell.pipelines.inference.nodes import predict_single_view_array
from fusemycell.position import PositionChannels, position_field
from tests.patching.conftest import textured_ellipsoid

TOLERANCE = 1e-4  # float32: the same sums in another order
QUIET = StreamOptions(progress=False)


def _network(spacing=(1.0, 0.5, 0.5), in_channels=1, normalization="none"):
    torch.manual_seed(0)
    config = UNetConfig(
        normalization=normalization, depth=2, base_channels=2, spacing_zyx=spacing, in_channels=in_channels
    )
    network = UNet3D(config).eval()
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a correction that is not zero
    return network


def _whole(network, volume):
    with torch.inference_mode():
        return network(torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None]).numpy()[0, 0]


@pytest.mark.parametrize(
    ("shape", "core"),
    [
        ((23, 37, 29), (4, 8, 8)),  # odd sizes, cores much smaller than the halo
        ((9, 61, 13), (2, 12, 4)),  # anisotropic, thin
        ((31, 20, 44), (6, 20, 44)),  # whole along y and x, cut along z only
        ((5, 7, 9), (8, 8, 8)),  # smaller than one core: one tile, no halo
    ],
)
def test_exact_tiling_equals_whole_volume_prediction(shape, core):
    network = _network()
    volume = np.random.default_rng(0).random(shape).astype(np.float32)
    grid = HaloGrid(shape, core, halo(network.config), multiple=network.config.size_multiple)
    stream = ExactPrediction(volume, TorchBackend(network, "cpu", amp=False), grid, batch_size=3, options=QUIET)
    np.testing.assert_allclose(read_all(stream), _whole(network, volume[None]), atol=TOLERANCE, rtol=0)


def test_cores_partition_the_volume_and_reads_stay_inside_it():
    for size, core, margin in [(37, 8, 6), (8, 8, 6), (5, 8, 6), (100, 12, 0)]:
        spans = halo_spans(size, core, margin)
        covered = np.zeros(size, int)
        for span in spans:
            covered[span.core_start : span.core_stop] += 1
            assert 0 <= span.read_start <= span.core_start and span.core_stop <= span.read_stop <= size
            assert span.core_start - span.read_start in (margin, span.core_start)  # a halo, or the volume's start
        assert (covered == 1).all()  # every voxel is written by exactly one core


def test_tta_with_exact_tiles_equals_whole_volume_tta():
    network = _network()
    volume = np.random.default_rng(1).random((17, 41, 35)).astype(np.float32)
    backend = TorchBackend(network, "cpu", amp=False)
    averaging = FlipAveraging(backend)
    whole = averaging(volume[None, None])[0, 0]
    grid = HaloGrid(volume.shape, (4, 12, 8), halo(network.config), multiple=network.config.size_multiple)
    stream = ExactPrediction(
        volume, backend, grid, flip_sets=averaging.flip_sets, options=StreamOptions(progress=False, read_ahead=True)
    )
    np.testing.assert_allclose(read_all(stream), whole, atol=TOLERANCE, rtol=0)


def test_position_channels_with_exact_tiles_equal_the_whole_volume():
    network = _network(spacing=(2.0, 0.5, 0.5), in_channels=4)
    view = textured_ellipsoid((14, 40, 36), seed=2).astype(np.float32)
    field = position_field(view, (2.0, 0.5, 0.5), PositionChannels(enabled=True))
    whole_input = np.concatenate([view[None], field.region((0, 0, 0), view.shape)])
    grid = HaloGrid(view.shape, (2, 8, 12), halo(network.config), multiple=network.config.size_multiple)
    stream = ExactPrediction(view, TorchBackend(network, "cpu", amp=False), grid, position=field, options=QUIET)
    np.testing.assert_allclose(read_all(stream), _whole(network, whole_input), atol=TOLERANCE, rtol=0)


def test_onnx_backend_with_exact_tiles_equals_whole_volume(tmp_path):
    network = _network()
    model = TrainedModel(network, card_for(network.config, (8, 16, 16)))
    backend = OnnxBackend(export_onnx(model, tmp_path / "m.onnx"))
    volume = np.random.default_rng(3).random((13, 30, 34)).astype(np.float32)
    grid = HaloGrid(volume.shape, (4, 8, 12), halo(network.config), multiple=network.config.size_multiple)
    stream = ExactPrediction(volume, backend, grid, options=QUIET)
    np.testing.assert_allclose(read_all(stream), _whole(network, volume[None]), atol=TOLERANCE, rtol=0)


@pytest.fixture
def invariant_model():
    network = _network(spacing=(2.0, 0.5, 0.5))
    return TrainedModel(network, card_for(network.config, (8, 16, 16)))


def test_a_file_streamed_with_exact_tiles_equals_the_whole_normalised_volume(tmp_path, invariant_model):
    data = (100 + 2900 * textured_ellipsoid((23, 44, 38), seed=5)).astype(np.uint16)
    path = write_volume(tmp_path / "image_1_nucleus_angle.tif", data, (2.0, 0.5, 0.5))
    card = invariant_model.card
    transform = InputTransform.from_card(card, scan_input(str(path), card))
    network_input = transform.network_input(str(path))  # read lazily from the file, tile by tile
    settings = TileSettings(tile_zyx=(21, 36, 36))  # cores 7x12x12 inside a halo of 7x12x12: 64 tiles
    stream = predict_volume(
        network_input,
        TorchBackend(invariant_model.network, "cpu", amp=False),
        card.architecture,
        settings,
        blend_tile=(8, 16, 16),
        options=StreamOptions(read_ahead=True, progress=False),
    )
    assert isinstance(stream, ExactPrediction) and len(stream.grid) > 8
    whole = _whole(invariant_model.network, network_input[0:23][None])
    np.testing.assert_allclose(read_all(stream), whole, atol=TOLERANCE, rtol=0)
    # the file's uint16 prediction is the same, whatever the tile (a speed setting only)
    outputs = []
    for tile in [(21, 36, 36), None]:
        inference = InferenceSettings(device="cpu", amp=False, tile_zyx=tile)
        volume = predict_file(str(path), TorchBackend(invariant_model.network, "cpu", amp=False), inference, card)
        outputs.append(np.stack([volume.data[z] for z in range(23)]).astype(np.int32))
    assert np.abs(outputs[0] - outputs[1]).max() <= 1  # rounding to uint16 of float32 sums in another order


def test_the_mlflow_model_predicts_with_exact_tiles(invariant_model):
    data = (100 + 2900 * textured_ellipsoid((12, 40, 36), seed=6)).astype(np.uint16)
    params = {"device": "cpu", "amp": False, "background_io": False}
    tiled = predict_single_view_array(data, invariant_model, {**params, "tile_zyx": [15, 34, 34]})
    whole = predict_in_memory(data, invariant_model, InferenceSettings(**params, tile_zyx=(12, 40, 36)))
    assert np.abs(tiled.astype(np.int32) - whole.astype(np.int32)).max() <= 1


def test_auto_tiling_is_exact_for_invariant_models_and_blends_the_others(invariant_model):
    settings = InferenceSettings(device="cpu")
    assert check_tiling(settings, invariant_model.card) == "exact"
    network = _network(normalization="instance")
    instance = TrainedModel(network, card_for(network.config, (8, 16, 16)))
    assert check_tiling(settings, instance.card) == "blend"
    with pytest.raises(TilingError, match="normalises every tile.*inference.tiling: blend"):
        check_tiling(InferenceSettings(tiling="exact"), instance.card)


def test_a_tile_too_small_for_the_halo_is_set_aside_naming_a_sensible_tile(invariant_model, caplog):
    architecture = invariant_model.card.architecture
    margin, multiple = halo(architecture), architecture.size_multiple
    shape = (30, 60, 60)
    # no core; the minimum the former warning recommended (cores of 1x2x2: 94 evaluations per voxel)
    for tile in [(4, 8, 8), (15, 26, 26)]:
        caplog.clear()
        grid = exact_grid(shape, halo=margin, multiple=multiple, settings=TileSettings(tile_zyx=tile))
        assert grid.planned and grid.evaluations_per_voxel() <= 8  # planned from memory instead
        assert "inference.tile_zyx" in caplog.text and "[28, 48, 48] or larger" in caplog.text
    # the recommended tile is used as given, and costs at most 8 evaluations per voxel
    working = recommended_tile(shape, margin, multiple)
    assert working == (28, 48, 48)
    grid = exact_grid(shape, halo=margin, multiple=multiple, settings=TileSettings(tile_zyx=working))
    assert not grid.planned and grid.evaluations_per_voxel() <= 8


def test_a_set_aside_tile_predicts_the_same_volume(tmp_path, invariant_model, caplog):
    data = (100 + 2900 * textured_ellipsoid((30, 60, 60))).astype(np.uint16)
    path = write_volume(tmp_path / "v.tif", data, (2, 1, 1))
    backend = TorchBackend(invariant_model.network, "cpu", amp=False)
    small = predict_file(str(path), backend, InferenceSettings(device="cpu", tile_zyx=(4, 8, 8)), invariant_model.card)
    small_planes = np.stack([small.data[z] for z in range(30)]).astype(np.int32)
    assert "inference.tile_zyx 4x8x8 is too small for exact tiling" in caplog.text
    whole = predict_file(str(path), backend, InferenceSettings(device="cpu"), invariant_model.card)
    assert np.abs(small_planes - np.stack([whole.data[z] for z in range(30)]).astype(np.int32)).max() <= 1


def test_a_memory_budget_too_small_for_the_volume_is_refused_naming_one_that_works():
    """0.05 GiB on a 64x512x512 volume planned millions of tiles; the planner now refuses, naming a budget."""
    shape, margin, multiple = (64, 512, 512), (36, 72, 72), (4, 8, 8)
    with pytest.raises(UserError, match="inference.memory_gb: 0.05 is too little memory") as caught:
        exact_grid(
            shape, halo=margin, multiple=multiple, settings=TileSettings(memory_gb=0.05), network_bytes_per_voxel=300
        )
    working = float(caught.value.settings[-1].value)
    assert caught.value.settings[-1].name == "inference.memory_gb" and working > 0.05
    grid = exact_grid(
        shape, halo=margin, multiple=multiple, settings=TileSettings(memory_gb=working), network_bytes_per_voxel=300
    )
    assert grid.evaluations_per_voxel() <= 8


@pytest.mark.parametrize(
    ("core", "halo_zyx", "multiple"),
    [
        ((3, 8, 8), (8, 16, 16), (2, 4, 4)),
        ((4, 8, 8), (8, 15, 16), (2, 4, 4)),
        ((0, 8, 8), (8, 16, 16), (2, 4, 4)),
        ((4, 8, 8), (-2, 16, 16), (2, 4, 4)),
        ((4, 8), (8, 16, 16), (2, 4, 4)),
        ((4.5, 8, 8), (8, 16, 16), (2, 4, 4)),
    ],
)
def test_a_halo_grid_off_the_pooling_grid_cannot_be_made(core, halo_zyx, multiple):
    with pytest.raises(ValueError, match="core|halo|must be"):
        HaloGrid((64, 256, 256), core, halo_zyx, multiple=multiple)


def test_a_core_covering_its_axis_need_not_be_a_multiple():
    grid = HaloGrid((5, 30, 30), (5, 8, 8), (2, 4, 4), multiple=(2, 4, 4))
    assert grid.core == (5, 8, 8) and len(grid.spans[0]) == 1


def test_planned_tiles_fit_the_memory_budget_and_compute_few_voxels_twice():
    shape, margin, multiple = (300, 1920, 1920), (16, 32, 32), (2, 4, 4)
    budgets = [1.0, 2.0, 8.0]
    evaluations = []
    for memory_gb in budgets:
        grid = exact_grid(
            shape,
            halo=margin,
            multiple=multiple,
            settings=TileSettings(memory_gb=memory_gb),
            network_bytes_per_voxel=132,
        )
        tz, ty, tx = grid.tile
        used = 132 * tz * ty * tx + host_bytes(shape, grid.core[0], grid.tile)
        assert used <= 0.75 * memory_gb * 2**30
        assert all(c % m == 0 for c, m in zip(grid.core, multiple))  # cores keep the pooling grid
        evaluations.append(grid.evaluations_per_voxel())
    assert evaluations == sorted(evaluations, reverse=True)  # more memory, fewer voxels computed twice
    assert evaluations[-1] < 2.0
    # a volume that fits is one tile: every voxel computed once
    small = exact_grid((56, 200, 216), halo=margin, multiple=multiple, settings=TileSettings())
    assert len(small) == 1 and small.evaluations_per_voxel() == 1.0


def test_the_planner_prefers_fewer_evaluations():
    calls = []

    def fits(core, tile):
        calls.append(tile)
        return tile[0] * tile[1] * tile[2] <= 40 * 100 * 100

    core = plan_cores((64, 256, 256), (8, 16, 16), (2, 4, 4), fits)
    grid = HaloGrid((64, 256, 256), core, (8, 16, 16), multiple=(2, 4, 4))
    assert fits(core, grid.tile)
    # no other core along y (same z and x) that fits computes fewer voxels
    for other in range(4, 257, 4):
        alternative = HaloGrid((64, 256, 256), (core[0], other, core[2]), (8, 16, 16), multiple=(2, 4, 4))
        if fits(alternative.core, alternative.tile):
            assert alternative.evaluations_per_voxel() >= grid.evaluations_per_voxel() - 1e-9


def test_exact_streaming_keeps_one_row_of_planes():
    network = _network()
    volume = np.random.default_rng(4).random((40, 24, 24)).astype(np.float32)
    grid = HaloGrid(volume.shape, (4, 24, 24), halo(network.config), multiple=network.config.size_multiple)
    stream = ExactPrediction(volume, TorchBackend(network, "cpu", amp=False), grid, options=QUIET)
    for z in range(40):
        stream[z]
        assert stream._row.shape[0] <= 4  # the planes of one row of cores, never the volume


def test_streaming_a_wide_file_stays_within_the_planned_host_memory(tmp_path, invariant_model, monkeypatch):
    """The host buffers the planner counts (:func:`host_bytes`) bound what a file-to-file prediction holds.

    Measured with tracemalloc (NumPy's buffers; the network's own tensors are planned separately): a tile
    of a wide plane must cost about itself, not whole planes.
    """
    import tracemalloc

    from fusemycell import normalization

    monkeypatch.setattr(normalization, "NORMALIZE_CHUNK_VOXELS", 1 << 14)  # the fixed part small next to the rest
    data = (100 + 2900 * textured_ellipsoid((24, 64, 320), seed=2)).astype(np.uint16)
    path = write_volume(tmp_path / "image_1_nucleus_angle.tif", data, (2.0, 0.5, 0.5))
    card = invariant_model.card
    settings = InferenceSettings(device="cpu", amp=False, tile_zyx=(21, 40, 100), crop_to_specimen=False)
    shape = InputTransform.from_card(card, scan_input(str(path), card)).volume.output_shape
    grid = exact_grid(
        shape, halo=halo(card.architecture), multiple=card.architecture.size_multiple, settings=settings.tile_settings
    )
    assert len(grid.spans[0]) > 2 and len(grid.spans[1]) > 2  # several rows of planes, several tiles per row
    planned = host_bytes(shape, grid.core[0], grid.tile)

    tracemalloc.start()
    try:
        volume = predict_file(str(path), TorchBackend(invariant_model.network, "cpu", amp=False), settings, card)
        tracemalloc.reset_peak()
        write_volume(tmp_path / "out.tif", volume.data, volume.spacing_zyx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= planned


def test_planned_tiles_go_one_per_call_and_given_tiles_in_batches(invariant_model):
    volume = np.random.default_rng(0).random((20, 40, 40)).astype(np.float32)
    backend = TorchBackend(invariant_model.network, "cpu", amp=False)
    architecture = invariant_model.card.architecture

    def stream(tile):
        settings = TileSettings(tile_zyx=tile, batch_size=4)
        return predict_volume(volume, backend, architecture, settings, blend_tile=(8, 16, 16), options=QUIET)

    given, planned = stream((20, 36, 36)), stream(None)
    assert not given.grid.planned and given.batch_size == 4 and len(given.grid) > 1
    assert planned.grid.planned and planned.batch_size == 1  # the planner sized the tile for one per call


def test_the_host_load_follows_the_file_the_flips_and_the_device(invariant_model):
    from fusemycell.inference.predictor import host_load
    from fusemycell.normalization import NormalizationStats
    from fusemycell.preprocessing.crop import full_box
    from fusemycell.preprocessing.volumes import PreprocessedVolume, VolumeTransform

    data = np.zeros((12, 48, 40), dtype=np.uint16)
    transform = VolumeTransform(  # a file finer than the model's grid, resampled onto it
        original_shape=data.shape,
        spacing_zyx=(1.0, 0.25, 0.25),
        box=full_box(data.shape),
        stats=NormalizationStats(low=0.0, high=1.0),
        output_spacing_zyx=(2.0, 0.5, 0.5),
    )
    network_input = PreprocessedVolume(data, transform)
    card = invariant_model.card
    backend = TorchBackend(invariant_model.network, "cpu", amp=False)
    load = host_load(network_input, card.architecture, 4, backend)
    assert load.resampled and load.read_ratio > 4  # about 2 x 2 x 2 file voxels per network voxel
    assert load.output_plane == 48 * 40 and load.raw_width == 40 and load.flips == 4 and not load.pinned
    assert host_load(np.zeros((4, 8, 8)), card.architecture, 1, backend) == HostLoad()
    shape, tile = (300, 1920, 1920), (64, 256, 256)
    plain = host_bytes(shape, 48, tile)
    for more in (
        HostLoad(flips=4),
        HostLoad(pinned=True),
        HostLoad(read_ratio=8, resampled=True),
        HostLoad(in_channels=4),
    ):
        assert host_bytes(shape, 48, tile, more) > plain
    assert host_bytes(shape, 48, tile, HostLoad(output_plane=4 * 1920 * 1920)) > plain  # a coarser network grid
