import numpy as np
import pytest

from fusemycell.patching.sampling import foreground_grid, patch_count, sample_origins


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    data = rng.random((30, 50, 45)).astype(np.float32) * 0.1
    data[10:16, 30:40, 5:12] = 1.0  # the specimen: a small bright box
    return data


def test_foreground_grid_is_the_block_maximum(volume):
    grid = foreground_grid(volume, (4, 8, 8), threshold=0.5, slab_depth=6)
    assert grid.maxima.shape == (8, 7, 6)
    for index in np.ndindex(grid.maxima.shape):
        box = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, (4, 8, 8)))
        assert grid.maxima[index] == volume[box].max()
    # the box z 10-16, y 30-40, x 5-12 touches blocks z 8-16, y 24-40, x 0-16
    assert grid.foreground_voxels(volume.shape) == 8 * 16 * 16


def test_patch_count_is_proportional_and_bounded():
    assert patch_count(2_000_000, 10, 1, 100) == 20
    assert patch_count(0, 10, 3, 100) == 3
    assert patch_count(10**9, 10, 3, 100) == 100


@pytest.mark.parametrize("background_fraction", [0.0, 0.25, 0.6])
def test_foreground_share_and_every_patch_inside(volume, background_fraction):
    patch = (8, 16, 16)
    grid = foreground_grid(volume, (4, 8, 8), threshold=0.5)
    origins = sample_origins(
        volume.shape, patch, grid, count=200, background_fraction=background_fraction, rng=np.random.default_rng(1)
    )
    assert len(origins) == 200
    with_foreground = 0
    for (z, y, x), _ in origins:
        assert 0 <= z <= volume.shape[0] - patch[0]
        assert 0 <= y <= volume.shape[1] - patch[1]
        assert 0 <= x <= volume.shape[2] - patch[2]
        with_foreground += volume[z : z + 8, y : y + 16, x : x + 16].max() > 0.5
    drawn = [d for _, d in origins]
    assert drawn.count("uniform") == round(background_fraction * 200)
    # at least every foreground-drawn patch contains the specimen (the block is inside the patch)
    assert with_foreground / 200 >= 1 - background_fraction


def test_volumes_without_foreground_get_uniform_patches(volume):
    grid = foreground_grid(volume, (4, 8, 8), threshold=5.0)
    origins = sample_origins(
        volume.shape, (8, 16, 16), grid, count=10, background_fraction=0.2, rng=np.random.default_rng(0)
    )
    assert {d for _, d in origins} == {"uniform"}


def test_volume_smaller_than_the_patch_gets_origin_zero():
    small = np.ones((3, 10, 10), np.float32)
    grid = foreground_grid(small, (2, 4, 4), threshold=0.5)
    origins = sample_origins(
        small.shape, (8, 16, 16), grid, count=5, background_fraction=0.0, rng=np.random.default_rng(0)
    )
    assert {o for o, _ in origins} == {(0, 0, 0)}
