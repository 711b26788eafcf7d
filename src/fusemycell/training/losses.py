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
    than 7 voxels. ``data_range`` (a number, or one per sample) is the challenge's: the larger
    range of the two whole normalised volumes; where it is not given (or NaN) it falls back
    to the larger of the two patches' own ranges, per sample.
    """
    prediction = prediction.float()
    target = target.float()
    sizes = prediction.shape[2:]
    kernel = tuple(min(window, s if s % 2 else s - 1) for s in sizes)
    if min(kernel) < 1:
        raise ValueError(f"volumes of shape {tuple(sizes)} are too small for SSIM")
    flat_p = prediction.detach().flatten(1)
    flat_t = target.detach().flatten(1)
    own_range = torch.maximum(flat_p.amax(1) - flat_p.amin(1), flat_t.amax(1) - flat_t.amin(1)).clamp_min(1e-6)
    if data_range is None:
        data_range = own_range
    else:
        given = torch.as_tensor(data_range, dtype=torch.float32, device=prediction.device).expand(len(own_range))
        data_range = torch.where(torch.isfinite(given) & (given > 0), given, own_range)
    data_range = data_range.reshape(-1, 1, 1, 1, 1)
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


def image_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    weights: LossWeights,
    data_range: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Weighted sum of L1, MSE and ``1 - SSIM`` (SSIM in float32, with the volumes' ``data_range``)."""
    total = prediction.new_zeros((), dtype=torch.float32)
    if weights.l1:
        total = total + weights.l1 * F.l1_loss(prediction.float(), target.float())
    if weights.mse:
        total = total + weights.mse * F.mse_loss(prediction.float(), target.float())
    if weights.ssim:
        total = total + weights.ssim * (1 - ssim3d(prediction, target, data_range).mean())
    return total
