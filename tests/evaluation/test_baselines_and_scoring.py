import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from fusemycell.evaluation.baselines import GaussianBlurred, blur_sigma
from fusemycell.evaluation.scoring import score_pair


def test_blurred_boxes_equal_a_whole_volume_blur():
    volume = np.random.default_rng(0).random((15, 30, 26)).astype(np.float32)
    full = gaussian_filter(volume, 0.5, mode="reflect")
    blurred = GaussianBlurred(volume, 0.5)
    for key in [np.s_[0:5], np.s_[7], np.s_[3:12, 4:20, 0:9], np.s_[:, 29, :], np.s_[14, :, 25]]:
        np.testing.assert_allclose(blurred[key], full[key], rtol=1e-6, atol=1e-7)


def test_public_sigmas_and_overrides():
    assert blur_sigma("nucleus") == 0.442 and blur_sigma("membrane") == 0.5
    assert blur_sigma("nucleus", {"nucleus": 1.0}) == 1.0
    with pytest.raises(ValueError, match="no blur sigma"):
        blur_sigma("actin")


def test_identity_scores_zero_and_the_truth_one():
    rng = np.random.default_rng(1)
    fused = (gaussian_filter(rng.random((12, 40, 40)), 2) * 4000).astype(np.uint16)
    single_view = (fused * 0.5 + rng.normal(0, 30, fused.shape)).clip(0).astype(np.uint16)
    rows = {r["method"]: r for r in score_pair(single_view, fused, fused, "nucleus")}
    assert rows["identity"]["n_ssim"] == 0 and rows["identity"]["n_iou"] == 0
    assert rows["model"]["n_ssim"] == pytest.approx(1.0) and rows["model"]["n_iou"] == pytest.approx(1.0)
    assert rows["gaussian_blur"]["n_ssim"] > 0  # blurring a noisy view helps a little, as the public baseline shows
