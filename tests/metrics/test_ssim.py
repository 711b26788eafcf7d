import numpy as np
import pytest
from skimage.metrics import structural_similarity

from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim
from tests.challenge_reference import percentile_normalize


def challenge_reference(prediction, target):
    """The challenge's computation with scikit-image, on whole in-memory volumes."""
    p = percentile_normalize(np.asarray(prediction, dtype=np.float64))
    t = percentile_normalize(np.asarray(target, dtype=np.float64))
    data_range = max(np.ptp(p), np.ptp(t))
    return structural_similarity(p, t, win_size=7, data_range=data_range)


def _structured(shape, seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(0, 4 * np.pi, n) for n in shape], indexing="ij")
    return (1000 + 500 * np.sin(z) * np.cos(y) * np.sin(x / 2) + rng.normal(0, 60, shape)).clip(0).astype(np.uint16)


@pytest.mark.parametrize("shape", [(7, 7, 7), (9, 40, 33), (23, 31, 50), (13, 70, 9)])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_equals_scikit_image_within_1e_6(shape, kind):
    if kind == "random":
        rng = np.random.default_rng(0)
        target = rng.gamma(2.0, 200.0, shape).astype(np.uint16)
        prediction = (0.6 * target + rng.gamma(2.0, 80.0, shape)).astype(np.uint16)
    else:
        target = _structured(shape, 0)
        prediction = _structured(shape, 1)
    ours = ssim(prediction, target, block=(5, 16, 16))
    assert ours == pytest.approx(challenge_reference(prediction, target), abs=1e-6)


def test_lazily_read_files_give_the_same_value(tmp_path):
    target, prediction = _structured((17, 60, 44), 2), _structured((17, 60, 44), 3)
    lazy_t = read_volume(write_volume(tmp_path / "t.tif", target, (1, 1, 1)), lazy=True).data
    lazy_p = read_volume(write_volume(tmp_path / "p.tif", prediction, (1, 1, 1)), lazy=True).data
    assert ssim(lazy_p, lazy_t, block=(4, 32, 32), workers=2) == pytest.approx(
        challenge_reference(prediction, target), abs=1e-9
    )


def test_constant_image_is_left_unnormalised():
    target = _structured((9, 20, 20), 0)
    constant = np.full(target.shape, 5, np.uint16)
    assert ssim(constant, target) == pytest.approx(challenge_reference(constant, target), abs=1e-6)
    assert image_statistics(constant).constant


def test_identity_scores_zero_and_perfection_one():
    target = _structured((9, 20, 20), 0)
    single_view = _structured((9, 20, 20), 5)
    s_input = ssim(single_view, target)
    assert normalized_ssim(ssim(single_view, target), s_input) == 0
    assert normalized_ssim(ssim(target, target), s_input) == pytest.approx(1.0)


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="at least 7 voxels"):
        ssim(np.zeros((6, 8, 8)), np.zeros((6, 8, 8)))
