"""Shared test helpers of the inference tests."""

from __future__ import annotations

import torch

from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D


def random_network() -> UNet3D:
    """A small non-residual U-Net with random weights large enough to change every voxel (seeded)."""
    torch.manual_seed(0)
    network = UNet3D(UNetConfig(depth=2, base_channels=4, residual=False))
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    return network
