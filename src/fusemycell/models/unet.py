"""3D U-Net with anisotropy-aware pooling and an optional residual output."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusemycell.models.config import UNetConfig
from fusemycell.models.receptive_field import gaussian_radius


def gaussian_kernel(sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1D Gaussian truncated at 4 sigma (SciPy's default), or the identity ``[1]`` for sigma 0.

    The one kernel of the project's torch blurs: the residual base here and the
    forward model's lateral blur (:mod:`fusemycell.training.physics`).
    """
    if sigma <= 0:
        return torch.ones(1, device=device)
    radius = gaussian_radius(sigma)
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (positions / sigma) ** 2)
    return kernel / kernel.sum()


def _normalization(kind: str, channels: int, groups: int) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    groups = math.gcd(channels, groups)  # the largest group count <= groups that divides channels
    return nn.GroupNorm(groups, channels)


def _activation(kind: str) -> nn.Module:
    return {
        "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
        "relu": lambda: nn.ReLU(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
    }[kind]()


class ConvBlock(nn.Sequential):
    """``convs`` x (3x3x3 convolution, normalisation, activation); without normalisation the convolutions
    have a bias."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, dropout: float = 0.0):
        layers: list[nn.Module] = []
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        for index in range(config.convs_per_level):
            norm = _normalization(config.normalization, out_channels, config.groups)
            conv_in = in_channels if index == 0 else out_channels
            layers.append(nn.Conv3d(conv_in, out_channels, 3, padding=1, bias=norm is None))
            layers += [norm] if norm is not None else []
            layers.append(_activation(config.activation))
        super().__init__(*layers)


def _kaiming_init(network: nn.Module, activation: str) -> None:
    """He initialisation for a network without normalisation: activations keep their scale through the depth.

    A convolution followed by the activation gets the activation's gain (leaky ReLU's slope 0.01);
    the upsampling convolution, followed by a concatenation, a linear gain. Biases start at 0.
    """
    nonlinearity = {"leaky_relu": "leaky_relu", "relu": "relu"}.get(activation, "relu")
    for module in network.modules():
        if isinstance(module, ConvBlock):
            for layer in module:
                if isinstance(layer, nn.Conv3d):
                    nn.init.kaiming_normal_(layer.weight, a=0.01, mode="fan_in", nonlinearity=nonlinearity)
                    nn.init.zeros_(layer.bias)
        elif isinstance(module, Upsample):
            nn.init.kaiming_normal_(module.layer.weight, mode="fan_in", nonlinearity="linear")
            nn.init.zeros_(module.layer.bias)


class Upsample(nn.Module):
    """Back to the finer level: trilinear interpolation + 3x3x3 conv, or a transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int], mode: str):
        super().__init__()
        self.kernel = kernel
        self.mode = mode
        if mode == "transposed":
            self.layer = nn.ConvTranspose3d(in_channels, out_channels, kernel_size=kernel, stride=kernel)
        else:
            self.layer = nn.Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.layer(features)
        upsampled = F.interpolate(features, scale_factor=self.kernel, mode="trilinear", align_corners=False)
        return self.layer(upsampled)


class UNet3D(nn.Module):
    """U-Net for ``(batch, channels, z, y, x)`` volumes of any size.

    Inputs are padded (replicating the border) to a multiple of the total
    pooling factor and the output is cropped back, so odd and anisotropic sizes
    work. With ``config.residual`` the network predicts a correction that is
    added to its input.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        pooling = config.pooling
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        in_channels = config.in_channels
        for level in range(config.depth):
            dropout = config.dropout if level == config.depth - 1 else 0.0
            self.encoders.append(ConvBlock(in_channels, config.channels(level), config, dropout))
            in_channels = config.channels(level)
            if level < config.depth - 1:
                self.pools.append(nn.MaxPool3d(kernel_size=pooling[level], stride=pooling[level]))
        self.upsamples = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(config.depth - 1)):
            self.upsamples.append(
                Upsample(config.channels(level + 1), config.channels(level), pooling[level], config.upsampling)
            )
            self.decoders.append(ConvBlock(2 * config.channels(level), config.channels(level), config))
        gain_offset = 2 * config.out_channels if config.has_residual and config.gain_offset else 0
        self.head = nn.Conv3d(config.channels(0), config.out_channels + gain_offset, kernel_size=1)
        if config.normalization == "none":
            _kaiming_init(self, config.activation)
        kernel = gaussian_kernel(config.residual_blur_sigma)
        for axis, name in enumerate(("blur_z", "blur_y", "blur_x")):
            shape = [1, 1, 1]
            shape[axis] = kernel.numel()
            # static (channels, 1, kz, ky, kx) weights: a fixed shape exports to ONNX
            weights = kernel.view(1, 1, *shape).repeat(config.out_channels, 1, 1, 1, 1)
            self.register_buffer(name, weights, persistent=False)
        if config.residual:
            # a residual network starts as the identity: its first predictions are the input itself
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Predict the fused volume from a single view, ``(N, C, z, y, x)`` in and out."""
        if volume.ndim != 5:
            raise ValueError(f"UNet3D expects (batch, channels, z, y, x), got shape {tuple(volume.shape)}")
        size = volume.shape[2:]
        padding = []
        for n, multiple in zip(reversed(size), reversed(self.config.size_multiple)):
            padding += [0, (-n) % multiple]
        padded = F.pad(volume, padding, mode="replicate") if any(padding) else volume
        return self.forward_padded(padded)[..., : size[0], : size[1], : size[2]]

    def forward_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """The network proper, for sizes that are multiples of ``config.size_multiple`` (what ONNX exports)."""
        features = padded
        skips = []
        for level, encoder in enumerate(self.encoders):
            features = encoder(features)
            if level < len(self.pools):
                skips.append(features)
                features = self.pools[level](features)
        for upsample, decoder in zip(self.upsamples, self.decoders):
            skip = skips.pop()
            features = decoder(torch.cat([upsample(features), skip], dim=1))
        output = self.head(features)
        if not self.config.has_residual:
            return output
        # the base keeps the input's float32 precision under mixed precision: only the correction is bf16
        with torch.autocast(device_type=padded.device.type, enabled=False):
            output = output.float()
            base = self.residual_base(padded.float())
            channels = self.config.out_channels
            deviation = output[:, :channels]
            if self.config.gain_offset:
                gain = output[:, channels : 2 * channels].clamp(-4.0, 4.0)
                # exp - 1, not expm1: ONNX has no expm1 (the difference is below float32 rounding of the output)
                deviation = deviation + (torch.exp(gain) - 1.0) * base + output[:, 2 * channels :]
            if self.config.residual_scale != 1.0:
                deviation = deviation * self.config.residual_scale
            return base + deviation

    def residual_base(self, volume: torch.Tensor) -> torch.Tensor:
        """The input's first ``out_channels`` channels (the single view; position channels follow it),
        or their separable Gaussian blur (replicated borders) when ``residual_blur_sigma`` > 0."""
        volume = volume[:, : self.config.out_channels]
        if self.config.residual_blur_sigma <= 0:
            return volume
        out = volume
        for axis, weights in enumerate((self.blur_z, self.blur_y, self.blur_x)):
            radius = weights.shape[2 + axis] // 2
            pad = [0, 0, 0, 0, 0, 0]
            pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
            out = F.conv3d(F.pad(out, pad, mode="replicate"), weights.to(out.dtype), groups=self.config.out_channels)
        return out
