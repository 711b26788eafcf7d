import pytest
from pydantic import ValidationError

from fusemycell.patching.config import PatchingConfig, anisotropic_patch_size, resolve_patch_size


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [((1.0, 0.39, 0.39), (24, 64, 64)), ((3.0, 0.39, 0.39), (12, 96, 96)), ((1.0, 1.0, 1.0), (48, 48, 48))],
)
def test_auto_patch_size_covers_similar_micrometres_on_every_axis(spacing, expected):
    size = anisotropic_patch_size(spacing, 32 * 64 * 64)
    assert size == expected
    extent = [n * s for n, s in zip(size, spacing)]
    assert max(extent) / min(extent) < 1.5


def test_explicit_patch_size_wins_and_auto_uses_the_median_spacing():
    assert resolve_patch_size(PatchingConfig(patch_size_zyx=(8, 16, 16)), [(3, 1, 1)]) == (8, 16, 16)
    auto = PatchingConfig(patch_budget_voxels=32 * 64 * 64)
    assert resolve_patch_size(auto, [(1.0, 0.39, 0.39), (3.0, 0.39, 0.39), (1.0, 0.39, 0.39)]) == (24, 64, 64)


def test_bad_patch_parameters_name_the_field():
    with pytest.raises(ValidationError, match="patch_size_zyx"):
        PatchingConfig(patch_size_zyx=(0, 16, 16))
    with pytest.raises(ValidationError, match="background_fraction"):
        PatchingConfig(background_fraction=1.5)
