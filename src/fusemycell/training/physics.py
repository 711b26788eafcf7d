"""A differentiable single-view image-formation model ``A`` for the physics-informed loss.

The network maps a single view (angle) to the fusion. ``A`` maps back: a good
prediction ``p`` of the fusion should, imaged the way one view is imaged,
reproduce the input. With depths ``d_x`` (illumination axis) and ``d_z``
(detection axis) in micrometres from the volume's entry faces::

    A(p) = g * B_{sigma(d_z)}[ p * exp(-d_x / L_ill) ] * exp(-d_z / L_det) + b
    sigma(d_z) = k * d_z            (lateral blur growing with depth along z)

``L_ill``, ``L_det``, ``k``, the gain ``g`` and the offset ``b`` are five
scalars, fitted on training pairs (``A(fused) ~ angle``) and optionally learned
jointly with the network. The consistency loss is ``mean |A(p) - input|``.
``B_sigma`` blends a few fixed Gaussian blurs, so it is differentiable in ``p``
and in ``k``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fusemycell.models.unet import gaussian_kernel

#: Lateral blur widths (voxels) precomputed and blended by :class:`SingleViewForwardModel`.
BLUR_LEVELS = (0.0, 0.75, 1.5, 3.0, 6.0)


def lateral_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur along y and x (``(N, 1, z, y, x)``), replicate borders."""
    if sigma <= 0:
        return volume
    kernel = gaussian_kernel(sigma, volume.device)
    radius = kernel.numel() // 2
    out = F.conv3d(F.pad(volume, (0, 0, radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1, 1))
    return F.conv3d(F.pad(out, (radius, radius, 0, 0, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 1, -1))


class SingleViewForwardModel(nn.Module):
    """``A``: fusion -> single view, with five learnable scalars (see the module docstring)."""

    def __init__(
        self,
        illumination_attenuation_um: float = 50.0,
        detection_attenuation_um: float = 50.0,
        blur_growth_per_um: float = 0.02,
    ):
        super().__init__()
        self.log_illumination_length = nn.Parameter(torch.tensor(math.log(illumination_attenuation_um)))
        self.log_detection_length = nn.Parameter(torch.tensor(math.log(detection_attenuation_um)))
        self.log_blur_growth = nn.Parameter(torch.tensor(math.log(max(blur_growth_per_um, 1e-4))))
        self.log_gain = nn.Parameter(torch.tensor(0.0))
        self.offset = nn.Parameter(torch.tensor(0.0))

    def describe(self) -> dict[str, float]:
        """The physical parameters, in micrometres where they have a unit."""
        with torch.no_grad():
            return {
                "illumination_attenuation_um": float(self.log_illumination_length.exp()),
                "detection_attenuation_um": float(self.log_detection_length.exp()),
                "blur_growth_per_um": float(self.log_blur_growth.exp()),
                "gain": float(self.log_gain.exp()),
                "offset": float(self.offset),
            }

    def forward(self, fused: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
        """Image ``fused`` (``(N, 1, z, y, x)``) as one view would.

        ``geometry`` is ``(N, 3, z, y, x)``: depth along z (detection), depth
        along x (illumination), both in micrometres, and the lateral voxel size.
        """
        fused = fused.float()
        depth_z, depth_x, spacing_xy = geometry[:, 0:1].float(), geometry[:, 1:2].float(), geometry[:, 2:3].float()
        excited = fused * torch.exp(-depth_x / self.log_illumination_length.exp())
        sigma = self.log_blur_growth.exp() * depth_z / spacing_xy.clamp_min(1e-6)  # voxels
        levels = torch.tensor(BLUR_LEVELS, device=fused.device)
        position = torch.clamp(sigma, 0, BLUR_LEVELS[-1])
        blurred = torch.zeros_like(excited)
        for index, width in enumerate(BLUR_LEVELS):
            # piecewise-linear (hat) weight of this level at each voxel's sigma: differentiable in k
            if index == 0:
                weight = torch.clamp(1 - (position - levels[0]) / (levels[1] - levels[0]), 0, 1)
            elif index == len(BLUR_LEVELS) - 1:
                weight = torch.clamp((position - levels[index - 1]) / (levels[index] - levels[index - 1]), 0, 1)
            else:
                rising = (position - levels[index - 1]) / (levels[index] - levels[index - 1])
                falling = (levels[index + 1] - position) / (levels[index + 1] - levels[index])
                weight = torch.clamp(torch.minimum(rising, falling), 0, 1)
            if bool((weight > 0).any()):
                blurred = blurred + weight * lateral_blur(excited, width)
        detected = blurred * torch.exp(-depth_z / self.log_detection_length.exp())
        return self.log_gain.exp() * detected + self.offset


def consistency_loss(
    forward_model: SingleViewForwardModel, prediction: torch.Tensor, single_view: torch.Tensor, geometry: torch.Tensor
) -> torch.Tensor:
    """``mean |A(prediction) - input|`` in float32."""
    return F.l1_loss(forward_model(prediction, geometry), single_view.float())
