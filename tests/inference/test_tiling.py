import numpy as np
import pytest

from fusemycell.inference.tiling import TileGrid, gaussian_weights_1d, tile_starts


@pytest.mark.parametrize(
    ("size", "tile", "overlap"),
    [(100, 32, 0.5), (33, 16, 0.5), (16, 16, 0.5), (7, 16, 0.5), (129, 64, 0.25), (50, 8, 0.0)],
)
def test_every_voxel_is_covered_and_the_last_tile_is_flush(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    effective = min(tile, size)
    assert starts[0] == 0
    assert starts[-1] + effective == size
    covered = np.zeros(size, dtype=int)
    for start in starts:
        covered[start : start + effective] += 1
    assert covered.min() >= 1
    step = max(1, int(tile * (1 - overlap)))
    assert all(b - a <= step for a, b in zip(starts, starts[1:]))


def test_gaussian_weights_peak_in_the_middle_and_are_never_zero():
    weights = gaussian_weights_1d(64)
    assert weights.max() == pytest.approx(1.0) and weights.min() > 0
    assert np.argmax(weights) in (31, 32)
    assert np.allclose(weights, weights[::-1])


def test_grid_normalizer_is_the_sum_of_tile_weights():
    grid = TileGrid((20, 37, 29), (8, 16, 16), overlap=0.5)
    total = np.zeros(grid.shape)
    weights = grid.tile_weights()
    for z in grid.starts[0]:
        for y, x in grid.yx_origins():
            total[z : z + 8, y : y + 16, x : x + 16] += weights
    np.testing.assert_allclose(grid.normalizer(0, 20), total, rtol=1e-5)
    assert total.min() > 0


def test_tiles_shrink_to_a_small_volume():
    grid = TileGrid((3, 10, 40), (8, 16, 16))
    assert grid.tile == (3, 10, 16)
    assert grid.starts[0] == [0] and grid.starts[1] == [0]


def test_the_tiling_fields_are_defined_once_and_inference_settings_inherits_them():
    from pydantic import ValidationError

    from fusemycell.inference.settings import InferenceSettings
    from fusemycell.inference.tiling import TileSettings

    settings = InferenceSettings(tiling="exact", tile_zyx=(16, 64, 64), overlap=0.25, memory_gb=3, tta=True)
    assert isinstance(settings, TileSettings)
    assert settings.tile_settings == TileSettings(
        tiling="exact", tile_zyx=(16, 64, 64), overlap=0.25, memory_gb=3, tta=True
    )
    assert set(TileSettings.model_fields) <= set(InferenceSettings.model_fields)
    for bad in [{"tiling": "exakt"}, {"overlap": 1.0}, {"memory_gb": 0}, {"tile_zyx": (0, 8, 8)}, {"mode": "blend"}]:
        with pytest.raises(ValidationError):
            TileSettings(**bad)  # the same checks wherever the settings come from


def test_a_blend_tile_of_a_few_voxels_is_refused_naming_the_model_tile():
    from fusemycell.errors import UserError
    from fusemycell.inference.tiling import TileSettings, check_blend_tiling

    with pytest.raises(UserError, match=r"inference.tile_zyx: 1x1x1 is too small to blend") as caught:
        check_blend_tiling((64, 512, 512), TileSettings(tile_zyx=(1, 1, 1)), card_tile=(16, 64, 64))
    assert "inference.tile_zyx: [16, 64, 64]" in str(caught.value)
    # a volume smaller than the minimum is one tile, whatever its size
    assert len(check_blend_tiling((4, 8, 8), TileSettings(tile_zyx=(4, 8, 8)), card_tile=(16, 64, 64))) == 1


def test_an_overlap_that_computes_every_voxel_too_often_is_refused():
    from fusemycell.errors import UserError
    from fusemycell.inference.tiling import MAX_EVALUATIONS_PER_VOXEL, TileSettings, check_blend_tiling

    usual = check_blend_tiling((64, 512, 512), TileSettings(tile_zyx=(16, 64, 64)), card_tile=(16, 64, 64))
    assert usual.evaluations_per_voxel() <= MAX_EVALUATIONS_PER_VOXEL
    with pytest.raises(UserError, match=r"inference.overlap: 0.9 .* Set --params inference.overlap=0.5"):
        check_blend_tiling((64, 512, 512), TileSettings(tile_zyx=(16, 64, 64), overlap=0.9), card_tile=(16, 64, 64))
