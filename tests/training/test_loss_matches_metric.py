"""The SSIM of the training loss is the challenge's local SSIM: same windows, same constants, same data range."""

import numpy as np
import pytest
import torch

from fusemycell.metrics.ssim import HALO, ImageStatistics, _block_ssim_sum
from fusemycell.training.losses import ssim3d


def _normalised_pair(shape, seed):
    rng = np.random.default_rng(seed)
    target = rng.gamma(2.0, 0.3, shape)
    prediction = target + rng.normal(0, 0.2, shape)
    return prediction, target


@pytest.mark.parametrize("data_range", [0.5, 3.0, 12.0])
def test_patch_ssim_with_the_volume_range_equals_the_metric_on_the_same_voxels(data_range):
    prediction, target = _normalised_pair((12, 20, 18), seed=1)
    # statistics that leave the (already normalised) patch as it is: the metric's own code path
    identity = ImageStatistics(low=0.0, high=1.0, minimum=0.0, maximum=data_range)
    interior = tuple(slice(HALO, n - HALO) for n in prediction.shape)
    count = int(np.prod([n - 2 * HALO for n in prediction.shape]))
    metric = _block_ssim_sum(prediction, target, interior, (identity, identity), data_range) / count
    loss_ssim = ssim3d(
        torch.from_numpy(prediction)[None, None].float(),
        torch.from_numpy(target)[None, None].float(),
        torch.tensor([data_range]),
    )
    assert float(loss_ssim[0]) == pytest.approx(metric, abs=2e-5)


def test_a_background_patch_is_judged_on_the_volume_scale_not_its_own():
    """On a dim patch the patch's own range shrinks SSIM's constants and makes noise dominate the loss."""
    rng = np.random.default_rng(2)
    target = torch.from_numpy(rng.normal(0.02, 0.005, (1, 1, 10, 16, 16))).float()
    prediction = target + torch.from_numpy(rng.normal(0, 0.005, target.shape)).float()
    own = float(ssim3d(prediction, target)[0])
    volume_scale = float(ssim3d(prediction, target, torch.tensor([4.0]))[0])
    assert volume_scale > 0.95 > own  # noise of 0.5% of the volume's range is nearly invisible to the metric


def test_a_missing_range_falls_back_to_the_patches_own_per_sample():
    prediction, target = (torch.from_numpy(a).float()[None, None] for a in _normalised_pair((9, 12, 12), seed=3))
    batch_p, batch_t = torch.cat([prediction, prediction]), torch.cat([target, target])
    mixed = ssim3d(batch_p, batch_t, torch.tensor([float("nan"), 5.0]))
    assert float(mixed[0]) == pytest.approx(float(ssim3d(prediction, target)[0]), abs=1e-6)
    assert float(mixed[1]) == pytest.approx(float(ssim3d(prediction, target, 5.0)[0]), abs=1e-6)
