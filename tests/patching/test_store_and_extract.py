import numpy as np
import pandas as pd
import pytest

from fusemycell.io.tiff import write_volume
from fusemycell.patching.extract import PatchPlan, cut_patches, read_patch
from fusemycell.patching.store import PatchStore, PatchStoreError, write_patch_store
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.position import PositionChannels, position_field
from tests.patching.conftest import position_store, textured_ellipsoid


def _index(n):
    return pd.DataFrame({"pair": ["p"] * n, "origin_z": range(n), "origin_y": 0, "origin_x": 0})


def test_store_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    angles = rng.random((5, 4, 6, 6)).astype(np.float32)
    fused = angles * 2
    patches = [(i, angles[i], fused[i]) for i in (3, 0, 4, 1, 2)]  # any order
    write_patch_store(tmp_path / "train", _index(5), (4, 6, 6), "float32", patches, metadata={"split": "train"})
    store = PatchStore(tmp_path / "train")
    assert len(store) == 5 and store.patch_size_zyx == (4, 6, 6)
    assert store.description["split"] == "train"
    for i in range(5):
        a, f = store[i]
        np.testing.assert_array_equal(a, angles[i])
        np.testing.assert_array_equal(f, fused[i])
    np.testing.assert_array_equal(store.index["origin_z"], range(5))


def test_failed_write_keeps_the_previous_store_and_leaves_no_partial(tmp_path):
    target = tmp_path / "train"
    ones = np.ones((2, 2, 2), np.float32)
    write_patch_store(target, _index(1), (2, 2, 2), "float16", [(0, ones, ones)])

    def exploding():
        yield 0, ones * 5, ones * 5
        raise RuntimeError("killed while cutting")

    with pytest.raises(RuntimeError, match="killed"):
        write_patch_store(target, _index(2), (2, 2, 2), "float16", exploding())
    store = PatchStore(target)
    assert len(store) == 1 and store[0][0].max() == 1  # the old store, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_store_refuses_incomplete_or_wrong_patches(tmp_path):
    ones = np.ones((2, 2, 2), np.float32)
    with pytest.raises(PatchStoreError, match="1 of 2 patches were never written"):
        write_patch_store(tmp_path / "a", _index(2), (2, 2, 2), "float16", [(0, ones, ones)])
    with pytest.raises(PatchStoreError, match=r"shape \(2, 2\)"):
        write_patch_store(tmp_path / "b", _index(1), (2, 2, 2), "float16", [(0, ones[0], ones)])
    with pytest.raises(PatchStoreError, match="written twice"):
        write_patch_store(tmp_path / "c", _index(1), (2, 2, 2), "float16", [(0, ones, ones), (0, ones, ones)])
    assert not any(tmp_path.iterdir())


def test_missing_store_says_which_pipeline_to_run(tmp_path):
    with pytest.raises(PatchStoreError, match="kedro run --pipelines patching"):
        PatchStore(tmp_path / "nowhere")


def test_read_patch_slices_and_reflect_pads(tmp_path):
    data = np.arange(3 * 10 * 12, dtype=np.float32).reshape(3, 10, 12)
    np.testing.assert_array_equal(read_patch(data, (1, 2, 3), (2, 4, 5)), data[1:3, 2:6, 3:8])
    padded = read_patch(data, (0, 0, 0), (5, 10, 12))
    assert padded.shape == (5, 10, 12)
    np.testing.assert_array_equal(padded[:3], data)
    np.testing.assert_array_equal(padded[3], data[1])  # reflect: ... 0 1 2 | 1 0
    np.testing.assert_array_equal(padded[4], data[0])
    single = read_patch(data[:1], (0, 0, 0), (3, 10, 12))
    np.testing.assert_array_equal(single[2], data[0])  # one plane: repeated


def test_plan_cuts_the_same_patches_as_slicing_and_measures_foreground(tmp_path):
    rng = np.random.default_rng(0)
    angle = rng.random((12, 40, 40)).astype(np.float32)
    fused = angle * 0.1
    fused[2:6, 5:15, 5:15] = 3.0
    angle_path = write_volume(tmp_path / "a.tif", angle, (1, 1, 1))
    fused_path = write_volume(tmp_path / "f.tif", fused, (1, 1, 1))
    origins = [(0, 0, 0), (6, 20, 20), (1, 4, 4)]
    index = pd.DataFrame(
        {
            "pair": "p",
            "origin_z": [o[0] for o in origins],
            "origin_y": [o[1] for o in origins],
            "origin_x": [o[2] for o in origins],
            "foreground_level": 1.0,
            "angle_path": str(angle_path),
            "fused_path": str(fused_path),
        }
    )
    PatchPlan(index=index, patch_size_zyx=(4, 8, 8), dtype="float32", split="train").write(tmp_path / "store")
    store = PatchStore(tmp_path / "store")
    for row, (z, y, x) in enumerate(origins):
        a, f = store[row]
        np.testing.assert_array_equal(a, angle[z : z + 4, y : y + 8, x : x + 8])
        np.testing.assert_array_equal(f, fused[z : z + 4, y : y + 8, x : x + 8])
    assert store.index["contains_foreground"].tolist() == [True, False, True]


def test_cut_patches_reads_in_z_order():
    data = np.zeros((10, 4, 4), np.float32)
    rows = [(0, (6, 0, 0)), (1, (1, 0, 0)), (2, (3, 0, 0))]
    assert [row for row, _, _ in cut_patches(data, data, rows, (2, 2, 2))] == [1, 2, 0]


# --- position channels (fusemycell.position) kept by the store ---------------------------------------------


def _position_plan_store(tmp_path, position=None, origins=((0, 0, 0), (4, 16, 8))):
    volume = textured_ellipsoid((12, 40, 36), seed=11)
    return volume, position_store(tmp_path / "store", volume, (1.0, 0.5, 0.5), origins, (8, 16, 16), position=position)


def test_position_fields_survive_the_store(tmp_path):
    volume, directory = _position_plan_store(tmp_path)
    assert (directory / "positions.npz").is_file()
    store = PatchStore(directory)
    assert store.position == PositionChannels(enabled=True) and store.position.count == 3
    stored = store.position_field("image_0_nucleus")
    direct = position_field(volume, (1.0, 0.5, 0.5), PositionChannels(enabled=True))
    assert stored.blocks_zyx == direct.blocks_zyx and stored.shape_zyx == (12, 40, 36)
    np.testing.assert_array_equal(stored.coarse, direct.coarse)
    with pytest.raises(PatchStoreError, match="no position field for other"):
        store.position_field("other")


def test_a_store_cut_without_position_reports_none(tmp_path):
    _, directory = _position_plan_store(tmp_path, PositionChannels(enabled=False))
    store = PatchStore(directory)
    assert store.position.count == 0 and not store.position.enabled
    assert not (directory / "positions.npz").exists()
    # a store written before position channels existed (no "position" in store.json) has none either
    ones = np.ones((2, 2, 2), np.float32)
    write_patch_store(tmp_path / "old", _index(1), (2, 2, 2), "float32", [(0, ones, ones)])
    assert PatchStore(tmp_path / "old").position.count == 0


def test_a_store_with_position_but_no_positions_file_names_the_folder(tmp_path):
    _, directory = _position_plan_store(tmp_path)
    (directory / "positions.npz").unlink()
    store = PatchStore(directory)
    with pytest.raises(PatchStoreError, match="positions.npz") as error:
        store.position_field("image_0_nucleus")
    assert str(directory) in str(error.value)


def test_position_channels_of_a_padded_patch_follow_its_reflected_view(tmp_path):
    """A volume shorter than the patch along z: the stored view is reflect-padded, and so are its channels."""
    volume = textured_ellipsoid((5, 40, 36), seed=12)
    directory = position_store(tmp_path / "store", volume, (1.0, 0.5, 0.5), [(0, 24, 20)], (8, 16, 16))
    store = PatchStore(directory)
    view, _ = store[0]
    np.testing.assert_array_equal(view[5:], view[[3, 2, 1]])  # read_patch's reflection: ... 3 4 | 3 2 1
    network_input = PatchDataset(directory)[0][0].numpy()
    np.testing.assert_array_equal(network_input[0], view)
    np.testing.assert_allclose(network_input[1:, 5:], network_input[1:, [3, 2, 1]], atol=1e-6)
    field = store.position_field("image_0_nucleus")
    np.testing.assert_allclose(network_input[1:, :5], field.region((0, 24, 20), (5, 16, 16)), atol=1e-6)
