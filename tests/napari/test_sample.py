"""Sample data: a simulated angle/fused pair, made on the fly, shaped like layers opened from files."""

import numpy as np

from fusemycell.napari.sample import SAMPLE_SHAPE_ZYX, SAMPLE_SPACING_ZYX, simulated_nucleus, simulated_pair


def test_the_nucleus_sample_is_a_single_view_and_its_fusion_on_the_default_grid():
    (angle, angle_kwargs, kind), (fused, fused_kwargs, _) = simulated_nucleus()
    assert kind == "image" and angle.shape == fused.shape == SAMPLE_SHAPE_ZYX
    assert angle.dtype == fused.dtype == np.uint16
    assert angle_kwargs["name"] == "image_100_nucleus_angle" and fused_kwargs["name"] == "image_100_nucleus_fused"
    assert angle_kwargs["scale"] == fused_kwargs["scale"] == SAMPLE_SPACING_ZYX
    assert angle_kwargs["metadata"]["fusemycell"]["kind"] == "angle"
    assert fused_kwargs["visible"] is False  # the target is there to compare, not shown over the input
    # the fusion is the sharper, brighter image: its contrast range is wider than the single view's
    angle_range = np.subtract(*angle_kwargs["contrast_limits"][::-1])
    assert np.subtract(*fused_kwargs["contrast_limits"][::-1]) > 2 * angle_range > 0


def test_the_sample_is_the_same_every_time_and_differs_by_channel():
    first = simulated_pair("membrane", shape_zyx=(8, 32, 32))
    again = simulated_pair("membrane", shape_zyx=(8, 32, 32))
    nucleus = simulated_pair("nucleus", shape_zyx=(8, 32, 32))
    assert np.array_equal(first[0][0], again[0][0])
    assert not np.array_equal(first[1][0], nucleus[1][0])
    assert first[0][1]["metadata"]["fusemycell"]["channel"] == "membrane"
