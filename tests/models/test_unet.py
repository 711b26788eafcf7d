import pytest
import torch
from pydantic import ValidationError

from fusemycell.models.config import UNetConfig, pooling_schedule
from fusemycell.models.unet import UNet3D


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ((1.0, 1.0, 1.0), [(2, 2, 2), (2, 2, 2), (2, 2, 2)]),
        # z 3x coarser than xy: xy pooled until it catches up, then z joins (nnU-Net's 2x rule)
        ((3.0, 0.5, 0.5), [(1, 2, 2), (1, 2, 2), (2, 2, 2)]),
        ((2.0, 1.0, 1.0), [(2, 2, 2), (2, 2, 2), (2, 2, 2)]),
        ((2.1, 1.0, 1.0), [(1, 2, 2), (2, 2, 2), (2, 2, 2)]),
    ],
)
def test_pooling_follows_the_anisotropy_rule(spacing, expected):
    assert pooling_schedule(spacing, depth=4) == expected


def test_pool_z_can_be_set_per_level():
    config = UNetConfig(depth=3, pool_z=(False, True))
    assert config.pooling == [(1, 2, 2), (2, 2, 2)]
    assert config.size_multiple == (2, 4, 4)
    with pytest.raises(ValidationError, match="pool_z needs depth - 1 = 2 entries"):
        UNetConfig(depth=3, pool_z=(True,))


@pytest.mark.parametrize("shape", [(7, 33, 29), (1, 16, 16), (12, 9, 40), (5, 5, 5)])
@pytest.mark.parametrize("normalization", ["instance", "group", "batch"])
def test_any_input_size_gives_the_same_output_size(shape, normalization):
    config = UNetConfig(depth=3, base_channels=4, normalization=normalization, spacing_zyx=(3.0, 0.5, 0.5))
    network = UNet3D(config).eval()
    with torch.no_grad():
        out = network(torch.rand(2, 1, *shape))
    assert out.shape == (2, 1, *shape)


@pytest.mark.parametrize("upsampling", ["trilinear", "transposed"])
@pytest.mark.parametrize("activation", ["leaky_relu", "relu", "gelu", "silu"])
def test_every_option_builds_and_runs(upsampling, activation):
    config = UNetConfig(depth=2, base_channels=4, upsampling=upsampling, activation=activation, residual=False)
    assert UNet3D(config)(torch.rand(1, 1, 4, 8, 8)).shape == (1, 1, 4, 8, 8)


def test_residual_network_starts_as_the_identity():
    network = UNet3D(UNetConfig(depth=3, base_channels=4, residual=True, residual_blur_sigma=0.0))
    volume = torch.rand(1, 1, 6, 20, 18)
    assert torch.equal(network(volume), volume)
    plain = UNet3D(UNetConfig(depth=3, base_channels=4, residual=False))
    assert not torch.allclose(plain(volume), volume)


def test_wrong_rank_is_explained():
    with pytest.raises(ValueError, match=r"expects \(batch, channels, z, y, x\)"):
        UNet3D(UNetConfig(depth=2, base_channels=2))(torch.rand(1, 8, 8))


@pytest.mark.slow
def test_model_can_overfit_one_patch():
    torch.manual_seed(0)
    network = UNet3D(UNetConfig(depth=2, base_channels=4, residual=False))
    single_view = torch.rand(1, 1, 4, 16, 16)
    target = torch.nn.functional.avg_pool3d(single_view, 3, stride=1, padding=1) * 0.5 + 0.2
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(network(single_view), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]
