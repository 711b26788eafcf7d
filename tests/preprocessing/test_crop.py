import numpy as np

from fusemycell.preprocessing.crop import box_shape, full_box, specimen_box


def test_box_surrounds_the_specimen_with_the_margin():
    volume = np.zeros((20, 40, 50))
    volume[5:12, 10:30, 20:41] = 100
    profiles = [(volume.mean(axis=(1, 2)), volume.mean(axis=(0, 2)), volume.mean(axis=(0, 1)))]
    box = specimen_box(profiles, (2.0, 0.5, 0.5), threshold=0.05, margin_um=2.0)
    # margin of 2 um: 1 plane along z, 4 voxels along y and x, clamped to the volume
    assert box == ((4, 13), (6, 34), (16, 45))
    assert box_shape(box) == (9, 28, 29)


def test_box_is_the_union_over_angle_and_fused():
    a = [np.r_[np.zeros(5), np.ones(5), np.zeros(10)]] * 3
    b = [np.r_[np.zeros(12), np.ones(3), np.zeros(5)]] * 3
    box = specimen_box([a, b], (1, 1, 1), margin_um=0)
    assert box[0] == (5, 15)


def test_flat_profiles_keep_the_whole_volume():
    flat = [np.ones(7), np.ones(8), np.ones(9)]
    assert specimen_box([flat], (1, 1, 1)) == full_box((7, 8, 9)) == ((0, 7), (0, 8), (0, 9))
