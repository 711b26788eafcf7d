"""The gain-offset output: ``exp(g) * base + h + correction``, scaled as a whole by the guard."""

import math

import torch

from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D


def _network(**changes):
    config = UNetConfig(depth=2, base_channels=4, normalization="none", gain_offset=True, **changes)
    return UNet3D(config).eval()


def test_it_starts_as_the_residual_base():
    network = _network()
    volume = torch.rand(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(volume), network.residual_base(volume))


def test_a_gain_multiplies_the_base_and_an_offset_adds_to_it():
    network = _network()
    with torch.no_grad():
        network.head.weight.zero_()
        network.head.bias.copy_(torch.tensor([0.0, math.log(2.0), 0.25]))  # correction 0, gain log 2, offset 0.25
        volume = torch.rand(1, 1, 8, 16, 16)
        torch.testing.assert_close(network(volume), 2.0 * network.residual_base(volume) + 0.25)
        # the guard's scale applies to the whole deviation from the base
        half = _network(residual_scale=0.5)
        half.load_state_dict(network.state_dict())
        base = network.residual_base(volume)
        torch.testing.assert_close(half(volume), base + 0.5 * (base + 0.25))
