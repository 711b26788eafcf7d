"""The receptive field computed from the configuration bounds what a changed voxel can change, and is tight."""

import numpy as np
import pytest
import torch

from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.receptive_field import halo, receptive_field, receptive_reach
from fusemycell.models.unet import UNet3D

CONFIGS = {
    "mac-like, anisotropic": dict(depth=3, base_channels=2, spacing_zyx=(1.0, 0.39, 0.39)),
    "thick planes": dict(depth=3, base_channels=2, spacing_zyx=(3.0, 0.39, 0.39)),
    "transposed upsampling": dict(depth=3, base_channels=2, upsampling="transposed", spacing_zyx=(1.0, 0.5, 0.5)),
    "one conv per level, no blur": dict(depth=2, base_channels=2, convs_per_level=1, residual_blur_sigma=0.0),
    "wide blur": dict(depth=2, base_channels=2, residual_blur_sigma=2.0),
}


def _changed_extent(config: UNetConfig) -> list[tuple[int, int]]:
    """Offsets (per axis) of the outputs that change when one central input voxel changes (float64)."""
    torch.manual_seed(0)
    network = UNet3D(config).double().eval()
    torch.nn.init.normal_(network.head.weight, std=0.5)  # a correction that is not zero
    reach = receptive_reach(config)
    shape = [m * int(np.ceil((4 * r + 12) / m)) for r, m in zip(reach, config.size_multiple)]
    volume = torch.rand(1, 1, *shape, dtype=torch.float64)
    centre = [s // 2 for s in shape]
    changed = volume.clone()
    changed[(0, 0, *centre)] += 1.0
    with torch.no_grad():
        difference = (network(changed) - network(volume)).abs()[0, 0]
    where = torch.nonzero(difference > 1e-12)
    return [(int(where[:, a].min()) - centre[a], int(where[:, a].max()) - centre[a]) for a in range(3)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_changed_voxel_changes_nothing_beyond_the_reach_and_something_near_it(name):
    config = UNetConfig(normalization="none", **CONFIGS[name])
    reach = receptive_reach(config)
    extent = _changed_extent(config)
    for axis in range(3):
        low, high = extent[axis]
        assert -reach[axis] <= low and high <= reach[axis], (axis, extent, reach)
        # tight: the field is not a loose bound (pooling parity can hide one voxel at one position)
        assert max(-low, high) >= reach[axis] - 1, (axis, extent, reach)


def test_field_and_halo_follow_the_reach_and_the_size_multiple():
    config = UNetConfig(normalization="none", depth=3, base_channels=8, spacing_zyx=(1.0, 0.39, 0.39))
    reach = receptive_reach(config)
    assert receptive_field(config) == tuple(2 * r + 1 for r in reach)
    for h, r, m in zip(halo(config), reach, config.size_multiple):
        assert h >= r and h % m == 0 and h - r < m
    deeper = config.model_copy(update={"depth": 4})
    assert all(d > s for d, s in zip(receptive_reach(deeper), reach))  # one more level sees farther


def test_the_card_records_invariance_and_field_from_its_architecture():
    none = card_for(UNetConfig(normalization="none", depth=2, base_channels=4), (8, 16, 16))
    assert none.tile_invariant and none.receptive_field_zyx == receptive_field(none.architecture)
    instance = card_for(UNetConfig(normalization="instance", depth=2, base_channels=4), (8, 16, 16))
    assert not instance.tile_invariant
    # a card saved before these fields (or edited to contradict its network) gets them from the architecture
    payload = none.model_dump(mode="json")
    payload.pop("receptive_field_zyx")
    payload["tile_invariant"] = False
    reloaded = type(none).model_validate(payload)
    assert reloaded.tile_invariant and reloaded.receptive_field_zyx == none.receptive_field_zyx


@pytest.mark.parametrize("sigma", [0.0, 0.1, 0.442, 1.0, 2.3])
def test_the_kernel_and_the_reach_share_one_radius(sigma):
    from fusemycell.models.receptive_field import gaussian_radius
    from fusemycell.models.unet import gaussian_kernel

    kernel = gaussian_kernel(sigma)
    assert kernel.numel() == 2 * gaussian_radius(sigma) + 1
    assert float(kernel.sum()) == pytest.approx(1.0)
