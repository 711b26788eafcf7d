import numpy as np
import pytest

from fusemycell.metrics.segmentation import SegmenterUnavailable, iou_scores, normalized_iou


def _nuclei(shape, centres, radius, seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    volume = np.full(shape, 100.0)
    for cz, cy, cx in centres:
        volume[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2] = 2000
    return (volume + rng.normal(0, 20, shape)).clip(0).astype(np.uint16)


def test_ground_truth_scores_one_and_worse_inputs_less():
    centres = [(10, 15, 15), (20, 40, 30), (12, 35, 50)]
    truth = _nuclei((30, 60, 64), centres, 6, 0)
    shifted = _nuclei((30, 60, 64), [(c[0], c[1] + 3, c[2]) for c in centres], 6, 1)
    scores = iou_scores(truth, {"truth": truth, "shifted": shifted}, "nucleus", slab_depth=7)
    assert scores["truth"] == pytest.approx(1.0)
    assert 0 < scores["shifted"] < 0.9
    assert normalized_iou(scores["truth"], scores["shifted"]) == pytest.approx(1.0)
    assert normalized_iou(scores["shifted"], scores["shifted"]) == 0


def test_membrane_cells_come_from_the_spaces_between_membranes():
    shape = (12, 40, 40)
    volume = np.full(shape, 500.0)
    volume[:, ::10, :] = volume[:, :, ::10] = 3000  # a grid of membranes
    volume[:, :2], volume[:, -2:] = 50, 50  # outside the specimen
    truth = volume.astype(np.uint16)
    scores = iou_scores(truth, {"same": truth, "blank": np.full(shape, 500, np.uint16)}, "membrane")
    assert scores["same"] == pytest.approx(1.0)
    assert scores["blank"] < scores["same"]


def test_cellpose_without_the_package_is_explained():
    import importlib.util

    if importlib.util.find_spec("cellpose") is not None:
        pytest.skip("Cellpose is installed here: the message for a missing package cannot be shown")
    with pytest.raises(SegmenterUnavailable, match="pip install cellpose"):
        iou_scores(np.zeros((8, 8, 8)), {"a": np.zeros((8, 8, 8))}, "nucleus", segmenter="cellpose")


def test_unknown_segmenter_and_channel_are_refused():
    with pytest.raises(ValueError, match="unknown segmenter"):
        iou_scores(np.zeros((8, 8, 8)), {}, "nucleus", segmenter="magic")
    with pytest.raises(ValueError, match="unknown channel"):
        iou_scores(np.zeros((8, 8, 8)), {}, "actin")
