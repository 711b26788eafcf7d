"""Image losses: L1, MSE and a differentiable 3D SSIM (scikit-image's definition, in float32)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fusemycell.training.config import LossWeights

#: scikit-image's constants.
K1, K2 = 0.01, 0.03


def ssim3d(
    prediction: torch.Tensor, target: torch.Tensor, data_range: torch.Tensor | float | None = None, window: int = 7
) -> torch.Tensor:
    """Mean 3D SSIM per sample, ``(N, C, z, y, x)`` -> ``(N,)``.

    scikit-image's ``structural_similarity`` with a uniform window and sample
    covariance: statistics over ``window``^3 boxes, averaged over the boxes that
    lie fully inside the volume (skimage filters with reflection, then crops the
    border of ``window // 2``, which leaves exactly those boxes). Computed in
    float32 whatever the autocast state. The window shrinks (odd) for axes shorter
    than 7 voxels. ``data_range`` defaults to the larger of the two images'
    ranges, per sample.
    """
    prediction = prediction.float()
    target = target.float()
    sizes = prediction.shape[2:]
    kernel = tuple(min(window, s if s % 2 else s - 1) for s in sizes)
    if min(kernel) < 1:
        raise ValueError(f"volumes of shape {tuple(sizes)} are too small for SSIM")
    if data_range is None:
        flat_p = prediction.flatten(1)
        flat_t = target.flatten(1)
        range_p = flat_p.amax(1) - flat_p.amin(1)
        range_t = flat_t.amax(1) - flat_t.amin(1)
        data_range = torch.maximum(range_p, range_t).detach().clamp_min(1e-6)
    data_range = torch.as_tensor(data_range, dtype=torch.float32, device=prediction.device).reshape(-1, 1, 1, 1, 1)
    count = kernel[0] * kernel[1] * kernel[2]
    covariance_norm = count / (count - 1) if count > 1 else 1.0

    def mean(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, kernel_size=kernel, stride=1)

    with torch.autocast(device_type=prediction.device.type, enabled=False):
        mu_p, mu_t = mean(prediction), mean(target)
        var_p = covariance_norm * (mean(prediction * prediction) - mu_p * mu_p)
        var_t = covariance_norm * (mean(target * target) - mu_t * mu_t)
        cov = covariance_norm * (mean(prediction * target) - mu_p * mu_t)
        c1 = (K1 * data_range) ** 2
        c2 = (K2 * data_range) ** 2
        ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.flatten(1).mean(1)


def image_loss(prediction: torch.Tensor, target: torch.Tensor, weights: LossWeights) -> torch.Tensor:
    """Weighted sum of L1, MSE and ``1 - SSIM`` (SSIM in float32)."""
    total = prediction.new_zeros((), dtype=torch.float32)
    if weights.l1:
        total = total + weights.l1 * F.l1_loss(prediction.float(), target.float())
    if weights.mse:
        total = total + weights.mse * F.mse_loss(prediction.float(), target.float())
    if weights.ssim:
        total = total + weights.ssim * (1 - ssim3d(prediction, target).mean())
    return total
