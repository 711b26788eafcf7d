"""Position channels (fusemycell.position): physical meaning, bounded memory, and patch == tile."""

import logging
import math

import numpy as np
import pytest

from fusemycell.inference.streams import StreamingPrediction
from fusemycell.inference.tiling import TileGrid, TileSettings
from fusemycell.patching.extract import read_patch
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.position import PositionChannels, PositionField, block_means, grid_blocks, position_field
from tests.patching.conftest import position_store, textured_ellipsoid

SPACING = (2.0, 0.5, 0.5)
# a box specimen: planes 8-31 (24 planes = 48 um), rows 40-119 (80 = 40 um), columns 40-159 (120 = 60 um)
BOX = (slice(8, 32), slice(40, 120), slice(40, 160))


def _box_volume(seed=0):
    rng = np.random.default_rng(seed)
    volume = 0.05 * rng.random((40, 160, 200), dtype=np.float32)
    inside = volume[BOX].shape
    volume[BOX] = 0.6 + 0.3 * rng.random(inside, dtype=np.float32)
    return volume


@pytest.fixture(scope="module")
def box_channels():
    volume = _box_volume()
    config = PositionChannels(enabled=True)
    field = position_field(volume, SPACING, config)
    return field, field.region((0, 0, 0), volume.shape) * config.scale_um  # micrometres


def test_depth_z_grows_by_the_z_spacing_per_plane_inside_and_stays_constant_after(box_channels):
    _, (_, depth_z, _) = box_channels
    column = depth_z[:, 80, 100]
    np.testing.assert_allclose(column[:7], 0.0, atol=1e-4)  # before the specimen: no tissue crossed
    np.testing.assert_allclose(np.diff(column[9:31]), SPACING[0], atol=1e-4)  # one z spacing per plane
    np.testing.assert_allclose(column[33:], column[-1], atol=1e-4)  # after it: constant ...
    assert column[-1] == pytest.approx(24 * SPACING[0], abs=SPACING[0])  # ... the specimen's thickness, 48 um
    # a column that misses the specimen crosses no tissue at all
    np.testing.assert_allclose(depth_z[:, 10, 10], 0.0, atol=1e-4)


def test_depth_x_grows_by_the_x_spacing_per_column_inside_and_stays_constant_after(box_channels):
    _, (_, _, depth_x) = box_channels
    row = depth_x[20, 80, :]
    np.testing.assert_allclose(row[:36], 0.0, atol=1e-4)
    np.testing.assert_allclose(np.diff(row[46:154]), SPACING[2], atol=1e-4)  # 0.5 um per column
    np.testing.assert_allclose(row[166:], row[-1], atol=1e-4)
    assert row[-1] == pytest.approx(120 * SPACING[2], abs=2.0)  # 60 um of tissue along x
    # depth_x does not change along z or y inside the box (it only counts tissue along x)
    np.testing.assert_allclose(depth_x[12:28, 50:110, 100], depth_x[20, 80, 100], atol=1e-4)


def test_surface_distance_is_signed_and_the_true_distance_near_the_centre(box_channels):
    field, (surface, _, _) = box_channels
    cell = max(b * s for b, s in zip(field.blocks_zyx, SPACING))  # the coarse grid's resolution, um
    inside = np.zeros(surface.shape, bool)
    inside[BOX] = True
    # well inside positive, well outside negative (a cell away from the faces)
    core = np.zeros_like(inside)
    core[10:30, 48:112, 48:152] = True
    assert (surface[core] > 0).all()
    far = ~inside.copy()
    far[6:34, 36:124, 36:164] = False
    assert (surface[far] < 0).all()
    # near the centre: the distance to the nearest face; voxel centres in um along each axis
    z, y, x = 20, 80, 100
    faces = [
        ((z + 0.5) - 8) * 2.0,
        (32 - (z + 0.5)) * 2.0,
        ((y + 0.5) - 40) * 0.5,
        (120 - (y + 0.5)) * 0.5,
        ((x + 0.5) - 40) * 0.5,
        (160 - (x + 0.5)) * 0.5,
    ]
    assert surface[z, y, x] == pytest.approx(min(faces), abs=cell)
    # 8 rows (4 um) closer to a y face: 4 um less (the slope is exact, the offset within a cell)
    assert surface[z, y - 8, x] - surface[z, y - 16, x] == pytest.approx(4.0, abs=1e-3)
    assert surface[z, y - 16, x] == pytest.approx(((y - 16 + 0.5) - 40) * 0.5, abs=cell)
    # outside, 20 um beyond the y face
    assert surface[z, 0, x] == pytest.approx(-(40 - 0.5) * 0.5, abs=cell)


def test_values_are_micrometres_divided_by_scale_um():
    volume = _box_volume()
    at_50 = position_field(volume, SPACING, PositionChannels(enabled=True, scale_um=50.0)).region(
        (4, 20, 20), (8, 32, 32)
    )
    at_10 = position_field(volume, SPACING, PositionChannels(enabled=True, scale_um=10.0)).region(
        (4, 20, 20), (8, 32, 32)
    )
    np.testing.assert_allclose(at_10, 5 * at_50, rtol=1e-5, atol=1e-6)
    assert np.abs(at_10).max() > 1  # not all zero


def test_channels_come_in_the_configured_order():
    volume = _box_volume()
    full = position_field(volume, SPACING, PositionChannels(enabled=True))
    some = position_field(volume, SPACING, PositionChannels(enabled=True, channels=("depth_x", "surface_distance")))
    assert full.channels == 3 and some.channels == 2
    np.testing.assert_array_equal(some.coarse[0], full.coarse[2])
    np.testing.assert_array_equal(some.coarse[1], full.coarse[0])


def test_disabled_channels_have_no_field():
    with pytest.raises(ValueError, match="disabled"):
        position_field(np.ones((4, 4, 4), np.float32), (1, 1, 1), PositionChannels(enabled=False))
    assert PositionChannels(enabled=False).count == 0 and PositionChannels(enabled=True).count == 3
    assert not PositionChannels().enabled  # off by default: the quality benchmark shows no gain beyond seed noise


def test_region_of_a_sub_box_equals_the_same_sub_box_of_a_bigger_region():
    volume = textured_ellipsoid((22, 50, 46), seed=3)
    field = position_field(volume, (1.0, 0.5, 0.5), PositionChannels(enabled=True))
    big = field.region((2, 3, 5), (18, 40, 36))
    small = field.region((7, 10, 9), (6, 13, 11))
    np.testing.assert_allclose(small, big[:, 5:11, 7:20, 4:15], atol=1e-6)
    # and one voxel asked alone is the same again
    np.testing.assert_allclose(field.region((13, 20, 30), (1, 1, 1))[:, 0, 0, 0], big[:, 11, 17, 25], atol=1e-6)
    # the field of a block of the volume, indexed from the block's origin
    np.testing.assert_allclose(field.block((7, 10, 9)).region((0, 0, 0), (6, 13, 11)), small, atol=1e-6)
    assert field.region((0, 0, 0), (22, 50, 46)).dtype == np.float32


def test_field_survives_to_and_from_arrays():
    field = position_field(textured_ellipsoid((12, 32, 36), seed=1), (1.0, 0.5, 0.5), PositionChannels(enabled=True))
    again = PositionField.from_arrays({k: np.array(v) for k, v in field.to_arrays().items()})
    assert again.blocks_zyx == field.blocks_zyx and again.shape_zyx == field.shape_zyx
    assert again.specimen_fraction == pytest.approx(field.specimen_fraction)
    assert 0 < field.specimen_fraction < 1
    np.testing.assert_array_equal(again.region((0, 0, 0), (12, 32, 36)), field.region((0, 0, 0), (12, 32, 36)))


def test_grid_blocks_bound_the_coarse_grid_of_a_large_volume():
    shape, spacing = (891, 817, 817), (1.0, 0.39, 0.39)
    default = PositionChannels(enabled=True)
    blocks = grid_blocks(shape, spacing, default)
    cells = math.prod(math.ceil(n / b) for n, b in zip(shape, blocks))
    assert cells <= default.max_grid_voxels
    assert blocks == (2, 5, 5)  # about 2 um per cell when that fits
    tight = PositionChannels(enabled=True, max_grid_voxels=200_000)
    coarse = grid_blocks(shape, spacing, tight)
    cells = math.prod(math.ceil(n / b) for n, b in zip(shape, coarse))
    assert cells <= 200_000
    assert all(c >= b for c, b in zip(coarse, blocks)) and coarse != blocks  # grown, in every axis or more
    # still roughly isotropic in micrometres (within the rounding of one voxel per axis)
    cell_um = [b * s for b, s in zip(coarse, spacing)]
    assert max(cell_um) / min(cell_um) < 1.3


class RecordingVolume:
    """A ZYX array-like that records the planes asked for and refuses slabs thicker than ``most`` planes."""

    def __init__(self, data, most):
        self.data, self.most, self.reads = data, most, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, 3

    def __getitem__(self, key):
        z = key[0] if isinstance(key, tuple) else key
        if not isinstance(z, slice) or key is not z and any(k != slice(None) for k in key[1:]):
            raise AssertionError(f"expected a slab of whole planes, got {key!r}")
        start, stop, _ = z.indices(self.shape[0])
        if stop - start > self.most:
            raise AssertionError(f"asked for {stop - start} planes at once, at most {self.most} allowed")
        self.reads.append((start, stop))
        return self.data[z]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was read")


def test_block_means_read_the_volume_one_slab_at_a_time():
    data = np.random.default_rng(0).random((11, 14, 17)).astype(np.float32)
    blocks = (3, 4, 5)
    volume = RecordingVolume(data, most=blocks[0])
    means = block_means(volume, blocks)
    assert volume.reads == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert means.shape == (4, 4, 4)
    # partial cells at the far edges average the voxels they hold
    for cz in range(4):
        for cy in range(4):
            for cx in range(4):
                cell = data[3 * cz : 3 * cz + 3, 4 * cy : 4 * cy + 4, 5 * cx : 5 * cx + 5]
                assert means[cz, cy, cx] == pytest.approx(cell.mean(), rel=1e-5)


def test_position_field_of_an_array_like_reads_it_in_slabs():
    data = textured_ellipsoid((16, 40, 40), seed=2)
    config = PositionChannels(enabled=True)
    blocks = grid_blocks(data.shape, (1.0, 0.5, 0.5), config)
    volume = RecordingVolume(data, most=blocks[0])
    field = position_field(volume, (1.0, 0.5, 0.5), config)
    assert len(volume.reads) == math.ceil(16 / blocks[0])
    np.testing.assert_array_equal(field.coarse, position_field(data, (1.0, 0.5, 0.5), config).coarse)


@pytest.mark.parametrize("value", [0.0, 0.7])
def test_a_volume_without_specimen_gives_finite_channels_and_a_warning(value, caplog):
    volume = np.full((8, 24, 24), value, np.float32)
    with caplog.at_level(logging.WARNING, logger="fusemycell.position"):
        field = position_field(volume, (1.0, 0.5, 0.5), PositionChannels(enabled=True), name="empty.tif")
    assert "empty.tif" in caplog.text and "no specimen" in caplog.text
    channels = field.region((0, 0, 0), volume.shape)
    assert channels.shape == (3, 8, 24, 24) and np.isfinite(channels).all()


def test_non_finite_voxels_do_not_poison_the_channels():
    volume = textured_ellipsoid((12, 32, 32), seed=4)
    volume[0, 0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    channels = position_field(volume, (1.0, 0.5, 0.5), PositionChannels(enabled=True)).region((0, 0, 0), volume.shape)
    assert np.isfinite(channels).all()


@pytest.mark.parametrize("short", [1, 2, 5])
def test_channels_past_the_volume_end_are_reflected_as_read_patch_pads(short):
    """A patch longer than the volume along z (origin 0) is reflect-padded; its channels follow."""
    data = textured_ellipsoid((short, 30, 26), seed=5)
    field = position_field(data, (1.0, 0.5, 0.5), PositionChannels(enabled=True, smooth_um=0.0, threshold=0.3))
    patch = (8, 16, 16)
    origin = (0, 20, 10)  # also past the end along y (30 < 20 + 16) and flush along x (26 = 10 + 16)
    padded = field.region(origin, patch)
    # the channels of the volume's own voxels, padded exactly as read_patch pads the view
    inside = field.region((0, 0, 0), data.shape)
    for channel in range(field.channels):
        expected = read_patch(inside[channel], origin, patch)
        np.testing.assert_allclose(padded[channel], expected, atol=1e-6)
    # and the view itself, padded the same way, sits where its channels are
    view = read_patch(data, origin, patch)
    assert view.shape == padded.shape[1:]


def test_a_training_patch_and_an_inference_tile_at_the_same_place_get_the_same_input(tmp_path):
    """Through PatchPlan -> PatchStore -> PatchDataset, and through the streaming predictor's backend."""
    spacing = (1.0, 0.5, 0.5)
    volume = textured_ellipsoid((20, 48, 56), seed=7)
    tile = (8, 16, 16)
    grid = TileGrid(volume.shape, tile, 0.5)
    order = [(z, y, x) for z in grid.starts[0] for y, x in grid.yx_origins()]
    origins = [(4, 8, 16), (12, 32, 40), (0, 0, 0), (8, 24, 24)]
    assert all(o in order for o in origins)
    store = position_store(tmp_path / "store", volume, spacing, origins, tile)
    dataset = PatchDataset(store)  # no augmentation

    batches = []

    def recording(batch):
        batches.append(batch.copy())
        return batch[:, :1].copy()

    field = position_field(volume, spacing, PositionChannels(enabled=True))  # what inference computes for the input
    stream = StreamingPrediction(
        volume, recording, TileSettings(tile_zyx=tile, overlap=0.5, batch_size=1), position=field
    )
    np.stack([stream[z] for z in range(volume.shape[0])])
    tiles = dict(zip(order, (b[0] for b in batches)))
    assert len(batches) == len(order)
    for row, (z, y, x) in enumerate(origins):
        patch_input, _ = dataset[row]
        tile_input = tiles[(z, y, x)]
        assert patch_input.shape == tile_input.shape == (4, *tile)
        np.testing.assert_array_equal(tile_input[0], volume[z : z + 8, y : y + 16, x : x + 16])
        np.testing.assert_allclose(patch_input.numpy(), tile_input, rtol=0, atol=1e-6)


def test_channels_follow_read_patch_for_a_box_that_starts_inside_a_short_volume():
    data = textured_ellipsoid((5, 30, 26), seed=5)
    field = position_field(data, (1.0, 0.5, 0.5), PositionChannels(enabled=True))
    inside = field.region((0, 0, 0), data.shape)
    origin, patch = (3, 0, 0), (8, 16, 16)  # planes 3, 4 then 6 padded ones
    expected = np.stack([read_patch(channel, origin, patch) for channel in inside])
    np.testing.assert_allclose(field.region(origin, patch), expected, atol=1e-6)


def test_context_is_the_single_view_at_low_resolution_bright_inside_and_dark_outside():
    volume = _box_volume()
    config = PositionChannels(enabled=True, channels=("context",), context_um=4.0)
    field = position_field(volume, SPACING, config)
    context = field.region((0, 0, 0), volume.shape)[0]
    centre = context[20, 80, 100]
    assert 0.6 < centre < 0.9  # the specimen's mean brightness (0.6 + 0.3 * uniform), not divided by scale_um
    assert context[20, 5, 5] < 0.2 * centre  # far outside: the dim background
    unchanged = position_field(volume, SPACING, config.model_copy(update={"scale_um": 5.0})).coarse
    np.testing.assert_array_equal(unchanged, field.coarse)


def test_context_follows_a_slow_attenuation_across_the_whole_volume():
    """A patch cannot see a decay over 100 um; the context channel carries it (the global pass)."""
    volume = _box_volume()
    x = np.arange(volume.shape[2], dtype=np.float32) * SPACING[2]
    attenuated = volume * np.exp(-x / 40.0)[None, None, :]
    config = PositionChannels(enabled=True, channels=("context",))
    context = position_field(attenuated, SPACING, config).region((0, 0, 0), volume.shape)[0]
    near, far = context[20, 80, 50], context[20, 80, 150]  # both inside the specimen, 50 um apart along x
    assert far < 0.5 * near
    # a tile's values are the whole volume's at the same voxels: exact tiling stays exact
    np.testing.assert_array_equal(
        position_field(attenuated, SPACING, config).region((10, 30, 60), (8, 32, 48))[0], context[10:18, 30:62, 60:108]
    )
