"""Layers from volumes: physical scale, names, the challenge's contrast, from a sample of planes."""

import numpy as np

from fusemycell.io.volume import Volume
from fusemycell.napari.layers import CONTRAST_SAMPLE_PLANES, channel_and_kind, contrast_limits, volume_layer


class RecordingVolume:
    """An array-like that records the z-planes read (what a lazily read volume would cost)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.planes = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        self.planes.append(key[0])
        return self.array[key]


def test_contrast_limits_are_the_challenge_percentiles_of_a_small_volume():
    volume = np.random.default_rng(0).gamma(2.0, 300.0, (9, 30, 34)).astype(np.uint16)
    low, high = contrast_limits(volume)
    expected = np.percentile(volume, (2, 99.8))
    np.testing.assert_allclose((low, high), expected)
    assert contrast_limits(np.full((3, 4, 4), 7, np.uint16)) == (7.0, 8.0)  # constant: one grey level wide


def test_contrast_limits_of_a_large_volume_read_a_few_planes_and_stay_close():
    rng = np.random.default_rng(1)
    array = rng.gamma(2.0, 300.0, (200, 64, 64)).astype(np.float32)
    array[5, 0, 0] = np.nan  # not a number is left out, not propagated
    recording = RecordingVolume(array)
    low, high = contrast_limits(recording)
    assert len(recording.planes) == CONTRAST_SAMPLE_PLANES and recording.planes[0] == 0 and recording.planes[-1] == 199
    exact = np.nanpercentile(array, (2, 99.8))
    assert abs(low - exact[0]) < 0.1 * exact[0] and abs(high - exact[1]) < 0.1 * exact[1]


def test_a_layer_carries_the_voxel_size_as_scale_and_the_channel_from_the_name():
    volume = Volume(np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6), (2.0, 0.5, 0.25), {"study": "b"}, "x.tif")
    data, kwargs, kind = volume_layer(volume, "image_3_membrane_fused")
    assert kind == "image" and data is volume.data
    assert kwargs["name"] == "image_3_membrane_fused" and kwargs["scale"] == (2.0, 0.5, 0.25)
    assert kwargs["units"] == ("micrometer",) * 3 and kwargs["axis_labels"] == ("z", "y", "x")
    info = kwargs["metadata"]["fusemycell"]
    assert (info["channel"], info["kind"], info["source"]) == ("membrane", "fused", "x.tif")
    assert info["file_metadata"] == {"study": "b"}
    low, high = kwargs["contrast_limits"]
    assert 0 <= low < high <= volume.data.max()


def test_a_name_outside_the_challenge_takes_the_channel_from_the_file():
    assert channel_and_kind("embryo_t001.ome.zarr", {"channel": "nucleus"}) == ("nucleus", None)
    assert channel_and_kind("embryo_t001", {}) == (None, None)
    assert channel_and_kind("image_12_nucleus_angle.ome.zarr") == ("nucleus", "angle")
