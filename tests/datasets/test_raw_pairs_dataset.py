import numpy as np
import pytest
from kedro.io.core import DatasetError

from fusemycell.datasets import FuseMyCellPairsDataset, ParallelVolumes
from fusemycell.datasets.raw_pairs_dataset import GENERATED_MARKER
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.io.volume import Volume


def _volume(value: int) -> Volume:
    return Volume(
        data=np.full((3, 10, 12), value, np.uint16), spacing_zyx=(2, 0.5, 0.5), metadata={"channel": "nucleus"}
    )


def test_save_pairs_then_load_them(tmp_path):
    dataset = FuseMyCellPairsDataset(path=tmp_path / "synthetic")
    calls = []

    def produce():
        calls.append(1)
        return _volume(1), _volume(2)

    dataset.save({"image_0_nucleus": produce, "image_1_membrane_angle": _volume(3)})
    assert calls == [1]  # callables are resolved while saving, one at a time
    pairs = dataset.load()
    assert set(pairs) == {"image_0_nucleus", "image_1_membrane"}
    assert read_volume(pairs["image_0_nucleus"].angle).data.max() == 1
    assert read_volume(pairs["image_0_nucleus"].fused).data.max() == 2
    assert pairs["image_1_membrane"].fused is None
    assert (tmp_path / "synthetic" / GENERATED_MARKER).exists()


def test_saving_again_replaces_the_previous_simulation(tmp_path):
    dataset = FuseMyCellPairsDataset(path=tmp_path)
    dataset.save({"image_0_nucleus": (_volume(1), _volume(2)), "image_1_nucleus": (_volume(1), _volume(2))})
    dataset.save({"image_0_nucleus": (_volume(5), _volume(6))})
    assert set(dataset.load()) == {"image_0_nucleus"}  # no stale pair from the first run
    assert read_volume(tmp_path / "image_0_nucleus_angle.tif").data.max() == 5


def test_real_data_is_never_overwritten(tmp_path):
    real = write_volume(tmp_path / "image_0_nucleus_angle.tif", np.full((3, 8, 8), 9, np.uint16), (1, 1, 1))
    before = real.read_bytes()
    with pytest.raises(DatasetError, match="refusing to write into a folder.*image_0_nucleus_angle.tif"):
        FuseMyCellPairsDataset(path=tmp_path).save({"image_0_nucleus": (_volume(1), _volume(2))})
    assert real.read_bytes() == before
    assert not (tmp_path / GENERATED_MARKER).exists()


def test_bad_keys_are_refused(tmp_path):
    dataset = FuseMyCellPairsDataset(path=tmp_path)
    with pytest.raises(DatasetError, match="cannot save 'image_0_actin'.*unknown channel"):
        dataset.save({"image_0_actin": (_volume(1), _volume(2))})
    with pytest.raises(DatasetError, match="expected a Volume for a file stem"):
        dataset.save({"image_0_nucleus": np.zeros(3)})


def test_missing_folder_says_what_to_run(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found.*kedro run --pipelines simulation"):
        FuseMyCellPairsDataset(path=tmp_path / "nowhere").load()


def test_folder_without_fusemycell_files_lists_what_it_ignored(tmp_path):
    (tmp_path / "scan.tif").write_bytes(b"")
    with pytest.raises(DatasetError, match="no image_.*found; ignored: scan.tif"):
        FuseMyCellPairsDataset(path=tmp_path).load()


def test_pairs_are_found_in_subfolders_and_duplicates_are_listed(tmp_path):
    write_volume(tmp_path / "study1" / "image_0_nucleus_angle.tif", np.ones((2, 4, 4), np.uint16), (1, 1, 1))
    write_volume(tmp_path / "study1" / "image_0_nucleus_fused.tif", np.ones((2, 4, 4), np.uint16), (1, 1, 1))
    assert FuseMyCellPairsDataset(path=tmp_path).load()["image_0_nucleus"].is_complete
    write_volume(tmp_path / "study2" / "image_0_nucleus_angle.tif", np.ones((2, 4, 4), np.uint16), (1, 1, 1))
    listing = FuseMyCellPairsDataset(path=tmp_path).load()
    assert "image_0_nucleus" not in listing
    assert set(listing.duplicates["image_0_nucleus_angle"]) == {
        str(tmp_path / "study1" / "image_0_nucleus_angle.tif"),
        str(tmp_path / "study2" / "image_0_nucleus_angle.tif"),
    }


def test_parallel_save_writes_every_volume(tmp_path):
    volumes = ParallelVolumes({f"image_{i}_nucleus": (_volume(i + 1), _volume(i + 10)) for i in range(3)}, workers=2)
    FuseMyCellPairsDataset(path=tmp_path).save(volumes)
    listing = FuseMyCellPairsDataset(path=tmp_path).load()
    assert set(listing) == {"image_0_nucleus", "image_1_nucleus", "image_2_nucleus"}
    assert read_volume(listing["image_2_nucleus"].fused).data.max() == 12


def test_preview_is_a_table_of_pairs(tmp_path):
    dataset = FuseMyCellPairsDataset(path=tmp_path)
    dataset.save({"image_4_nucleus": (_volume(1), _volume(2))})
    table = dataset.preview()
    assert table["columns"][:2] == ["pair", "channel"]
    row = dict(zip(table["columns"], table["data"][0]))
    assert row["pair"] == "image_4_nucleus"
    assert row["angle shape"] == "3x10x12"
    assert row["spacing zyx (um)"] == "2, 0.5, 0.5"


def test_missing_intermediate_folder_names_the_pipeline_that_writes_it(tmp_path):
    dataset = FuseMyCellPairsDataset(path=tmp_path / "volumes", created_by="preprocessing")
    with pytest.raises(DatasetError, match="data folder not found; run 'kedro run --pipelines preprocessing' first"):
        dataset.load()


def test_refusing_real_data_says_to_leave_out_the_simulation(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "image_0_nucleus_angle.tif", np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(DatasetError, match="leave out the simulation pipeline.*raw_dir=PATH"):
        FuseMyCellPairsDataset(path=tmp_path).save({})
