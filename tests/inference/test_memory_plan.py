"""The memory plan of exact tiling: the network measured once per model, the host's buffers counted,
and the whole checked against the peak a file-to-file prediction really takes."""

import numpy as np
import pytest
import torch

from fusemycell import memory
from fusemycell.inference.apply import predict_file
from fusemycell.inference.backends import TorchBackend
from fusemycell.inference.memory_plan import planned_bytes
from fusemycell.inference.predictor import (
    host_load,
    network_bytes,
    plan_bytes,
    plan_exact,
    tile_shapes,
)
from fusemycell.inference.settings import InferenceSettings
from fusemycell.inference.transform import InputTransform, scan_input
from fusemycell.io.tiff import write_volume
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D

linux_only = pytest.mark.skipif(memory._status_bytes("VmRSS") is None, reason="reads /proc/self/status")


def _model():
    from fusemycell.models.card import card_for
    from fusemycell.models.model_file import TrainedModel

    torch.manual_seed(0)
    config = UNetConfig(normalization="none", depth=2, base_channels=2, spacing_zyx=(2.0, 0.5, 0.5))
    network = UNet3D(config).eval()
    return TrainedModel(network, card_for(config, (8, 16, 16)))


class CountingBackend:
    """Counts its calls; what it returns takes memory like a network's output."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return np.zeros((batch.shape[0], 1, *batch.shape[2:]), np.float32)


def test_the_network_is_measured_once_per_model_and_tiles():
    backend = CountingBackend()
    first = network_bytes(backend, [(8, 16, 16)], 1, calls=3)
    assert backend.calls == 3
    assert network_bytes(backend, [(8, 16, 16)], 1, calls=3) == first and backend.calls == 3  # cached
    network_bytes(backend, [(8, 32, 32)], 1, calls=3)
    assert backend.calls == 6  # another tile: measured again


def test_the_plan_measures_on_the_model_at_hand_once():
    model = _model()
    backend = TorchBackend(model.network, "cpu", amp=False)
    architecture = model.card.architecture
    settings = InferenceSettings(device="cpu", amp=False, memory_gb=0.1).tile_settings
    load = host_load(np.zeros((40, 160, 160), np.float32), architecture, 1, backend)
    calls = []
    network = backend.network
    backend.network = lambda batch: calls.append(batch.shape) or network(batch)  # counts the measuring calls
    grid = plan_exact((40, 160, 160), backend, architecture, settings, load)
    assert grid.planned and len(grid) > 1
    assert any(shape[2:] == grid.tile for shape in calls)  # measured on the planned tile itself
    measured = len(calls)
    assert plan_exact((40, 160, 160), backend, architecture, settings, load).tile == grid.tile
    assert len(calls) == measured  # the second volume of that shape: cached, no call


@linux_only
@pytest.mark.parametrize(("shape", "memory_gb"), [((48, 192, 192), 0.3), ((64, 256, 256), 0.5)])
def test_a_file_to_file_prediction_peaks_near_its_plan(tmp_path, shape, memory_gb):
    """The resident set's peak while a file is planned, predicted and written, over its start, against the
    plan: the network measured on the planned tiles plus the host's buffers counted from their shapes.

    With the steady heap (the default, ``inference.steady_heap``) the resident set follows the live memory:
    peak / plan measured 0.95 to 1.00 at these shapes (run alone or after each other). A buffer left out of
    the plan, or a network measured on one call only, fails; so would glibc's own heap (1.3 to 1.9)."""
    model = _model()
    card = model.card
    data = (100 + 2900 * np.random.default_rng(0).random(shape)).astype(np.uint16)
    path = write_volume(tmp_path / "image_1_nucleus_angle.tif", data, (2.0, 0.5, 0.5))
    del data
    settings = InferenceSettings(device="cpu", amp=False, memory_gb=memory_gb, crop_to_specimen=False)
    backend = TorchBackend(model.network, "cpu", amp=False)

    def predict_and_write():  # as a run does: plan (measuring the network), stream, write
        volume = predict_file(str(path), backend, settings, card)
        write_volume(tmp_path / "prediction.tif", volume.data, volume.spacing_zyx)

    peak = memory.call_peak_bytes(predict_and_write)
    source = InputTransform.from_card(card, scan_input(str(path), card)).network_input(str(path))
    load = host_load(source, card.architecture, 1, backend)
    grid = plan_exact(source.shape, backend, card.architecture, settings.tile_settings, load)  # the run's (cached)
    plan = plan_bytes(grid, load, backend, card.architecture.in_channels, settings.tile_settings)
    print(f"{shape}: plan {plan / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, ratio {peak / plan:.3f}")
    assert len(grid) > 1  # several tiles: the stream's memory, not one call's
    assert 0.85 * plan <= peak <= 1.15 * plan  # issue 29: within 15 %


@pytest.mark.parametrize("steady", [True, False])
def test_the_plan_makes_the_heap_steady_unless_told_not_to(monkeypatch, steady):
    from fusemycell.inference import predictor

    calls = []
    monkeypatch.setattr(predictor.memory, "steady_heap", lambda: calls.append(1) or True)
    model = _model()
    backend = TorchBackend(model.network, "cpu", amp=False)
    settings = InferenceSettings(device="cpu", amp=False, memory_gb=0.1, steady_heap=steady).tile_settings
    load = host_load(np.zeros((24, 96, 96), np.float32), model.card.architecture, 1, backend)
    plan_exact((24, 96, 96), backend, model.card.architecture, settings, load)
    assert bool(calls) is steady


def test_a_high_first_estimate_is_planned_again_with_larger_tiles_that_still_fit(monkeypatch):
    """A call's fixed cost (thread pools, the first call's caches) weighs on the small probe tile: its bytes
    per voxel overstate a large tile's. The planner measures the tiles it planned and plans larger ones,
    keeping only a plan whose measured network and host buffers fit the budget."""
    import math

    from fusemycell.inference import predictor
    from fusemycell.inference.memory_plan import PLANNED_MEMORY_SHARE

    fixed, per_voxel = 150 * 2**20, 180  # bytes: a network that takes a fixed cost plus 180 bytes per voxel

    def measured(backend, tiles, in_channels, calls=1):
        return fixed + per_voxel * max(math.prod(t) for t in tiles)

    monkeypatch.setattr(predictor, "network_bytes", measured)
    model = _model()
    backend = TorchBackend(model.network, "cpu", amp=False)
    shape, settings = (64, 512, 512), InferenceSettings(device="cpu", amp=False, memory_gb=1.0).tile_settings
    load = host_load(np.zeros(shape, np.float32), model.card.architecture, 1, backend)
    grid = plan_exact(shape, backend, model.card.architecture, settings, load)
    architecture = model.card.architecture
    halo, multiple = predictor.receptive_halo(architecture), architecture.size_multiple
    probe = tuple(min(n, 2 * h + m) for n, h, m in zip(shape, halo, multiple))  # the planner's first tile
    first = predictor.exact_grid(
        shape,
        halo=halo,
        multiple=multiple,
        settings=settings,
        load=load,
        network_bytes_per_voxel=measured(None, [probe], 1) / math.prod(probe),
    )
    assert math.prod(grid.tile) > 2 * math.prod(first.tile)  # planned again, larger
    host, network = planned_bytes(shape, grid.core[0], grid.tile, load, 0)[0], measured(None, tile_shapes(grid), 1)
    assert host + network <= 1.0 * 2**30 * PLANNED_MEMORY_SHARE * predictor.REPLAN_ABOVE  # and it fits
