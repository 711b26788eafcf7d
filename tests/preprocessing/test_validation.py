import numpy as np
import pytest

from fusemycell.io.pairs import pair_files
from fusemycell.io.tiff import write_volume
from fusemycell.pipelines.preprocessing.nodes import select_valid_pairs
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.preprocessing.fingerprint import scan_volume
from fusemycell.preprocessing.validation import validate_pairs


def _scans(listing):
    scans = {}
    for key, pair in listing.items():
        for kind in ("angle", "fused"):
            path = getattr(pair, kind)
            if path:
                scans[f"{key}_{kind}"] = scan_volume(path, pair=key, kind=kind, channel=pair.channel)
    return scans


def test_every_planted_problem_is_found_in_one_run(tmp_path, make_volume):
    files = [
        make_volume("image_0_nucleus_angle.tif"),
        make_volume("image_0_nucleus_fused.tif"),  # good
        make_volume("image_1_nucleus_angle.tif"),
        make_volume("image_1_nucleus_fused.tif", shape=(10, 32, 31)),
        make_volume("image_2_membrane_angle.tif"),
        make_volume("image_2_membrane_fused.tif", spacing=(3.0, 0.4, 0.4)),
        make_volume("image_3_nucleus_angle.tif"),
        make_volume("image_3_nucleus_fused.tif", value=5),
        make_volume("image_4_nucleus_angle.tif", shape=(3, 32, 30)),
        make_volume("image_4_nucleus_fused.tif", shape=(3, 32, 30)),
        make_volume("image_5_actin_angle.tif"),
        make_volume("image_6_membrane_angle.tif"),
        make_volume("image_7_nucleus_angle.tif", metadata={"channel": "membrane"}),
        make_volume("image_7_nucleus_fused.tif"),
        make_volume("readme.tif"),
    ]
    nan_data = np.ones((10, 32, 30), np.float32)
    nan_data[1, 1, 1] = np.nan
    files += [
        make_volume("image_8_nucleus_angle.tif"),
        write_volume(tmp_path / "image_8_nucleus_fused.tif", nan_data, (2, 0.4, 0.4)),
    ]
    broken = tmp_path / "image_9_membrane_fused.tif"
    broken.write_text("not a tiff")
    files += [make_volume("image_9_membrane_angle.tif"), broken]

    listing = pair_files(files, root=tmp_path)
    report = validate_pairs(listing, _scans(listing), patch_size_zyx=(8, 16, 16))
    found = {(p.pair, p.severity, p.problem.split(" ")[0]) for p in report.problems}
    assert ("image_1_nucleus", "error", "angle") in found  # shape mismatch
    assert ("image_2_membrane", "warning", "voxel") in found  # spacing disagreement
    assert ("image_3_nucleus", "error", "constant") in found
    assert ("image_4_nucleus", "warning", "smaller") in found
    assert ("image_5_actin", "error", "unknown") in found
    assert ("image_6_membrane", "error", "missing") in found
    assert ("image_7_nucleus", "warning", "metadata") in found
    assert ("image_8_nucleus", "error", "1") in found  # "1 non-finite voxels"
    assert ("image_9_membrane", "error", "unreadable:") in found
    assert report.ignored_files == [
        "readme.tif (not a FuseMyCell file name; expected image_{N}_{nucleus|membrane}_{angle|fused}.tif)"
    ]
    # warnings keep a pair, errors do not
    assert report.valid_pairs == ["image_0_nucleus", "image_2_membrane", "image_4_nucleus", "image_7_nucleus"]
    assert set(report.invalid_pairs) == {
        "image_1_nucleus",
        "image_3_nucleus",
        "image_5_actin",
        "image_6_membrane",
        "image_8_nucleus",
        "image_9_membrane",
    }
    for problem in report.problems:  # every finding names a file
        assert problem.file and problem.file != "None"

    as_dict = report.to_dict(policy="skip")
    assert select_valid_pairs(as_dict, PreprocessingConfig(on_invalid="skip")) == report.valid_pairs
    with pytest.raises(ValueError) as raised:
        select_valid_pairs(as_dict, PreprocessingConfig(on_invalid="fail"))
    message = str(raised.value)
    for pair in report.invalid_pairs:
        assert pair in message
    assert "on_invalid: skip" in message


def test_duplicates_are_reported(tmp_path, make_volume):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    files = [
        make_volume("a/image_0_nucleus_angle.tif"),
        make_volume("b/image_0_nucleus_angle.tif"),
        make_volume("a/image_0_nucleus_fused.tif"),
    ]
    listing = pair_files(files)
    report = validate_pairs(listing, _scans(listing), patch_size_zyx=(4, 4, 4))
    assert [p.problem for p in report.problems] == ["duplicate id: 2 files are image_0_nucleus_angle"]
    assert report.valid_pairs == []


def test_no_valid_pair_left_is_an_error():
    report = {"problems": [], "valid_pairs": [], "invalid_pairs": []}
    with pytest.raises(ValueError, match="no valid angle/fused pair"):
        select_valid_pairs(report, PreprocessingConfig(on_invalid="skip"))


def test_a_readable_file_is_still_checked_when_its_partner_is_unreadable(tmp_path, make_volume):
    angle = tmp_path / "image_0_nucleus_angle.tif"
    angle.write_bytes(b"not a tiff at all")
    fused = make_volume("image_0_nucleus_fused.tif", value=7)
    listing = pair_files([angle, fused])
    scans = {
        f"image_0_nucleus_{kind}": scan_volume(str(path), pair="image_0_nucleus", kind=kind, channel="nucleus")
        for kind, path in (("angle", angle), ("fused", fused))
    }
    report = validate_pairs(listing, scans, patch_size_zyx=(4, 8, 8))
    problems = [(p.file, p.problem) for p in report.problems]
    assert any(file == str(angle) and problem.startswith("unreadable") for file, problem in problems), problems
    assert (str(fused), "constant image (every voxel is 7)") in problems
    with pytest.raises(ValueError) as failure:
        select_valid_pairs(report.to_dict("fail"), PreprocessingConfig(on_invalid="fail"))
    assert str(failure.value).count(str(angle)) == 1  # the unreadable file is named once, not twice


def test_a_prediction_is_never_taken_as_ground_truth(make_volume):
    """A prediction written as image_N_..._fused.tif next to its angle carries fusemycell's mark: refused as fused."""
    from fusemycell.datasets.tiff_folder_dataset import PROVENANCE_VALUE

    files = [
        make_volume("image_0_nucleus_angle.tif"),
        make_volume("image_0_nucleus_fused.tif", metadata={"fusemycell": PROVENANCE_VALUE}),
        make_volume("image_1_nucleus_angle.tif", metadata={"fusemycell": PROVENANCE_VALUE}),
        make_volume("image_1_nucleus_fused.tif", metadata={"fusemycell": "a note that is no mark"}),
    ]
    listing = pair_files(files)
    report = validate_pairs(listing, _scans(listing), patch_size_zyx=(4, 8, 8))
    found = {(p.file, p.severity): p.problem for p in report.problems if "a prediction" in p.problem}
    assert set(found) == {(str(files[1]), "error"), (str(files[2]), "warning")}
    assert (
        PROVENANCE_VALUE in found[(str(files[1]), "error")] and "fused ground truth" in found[(str(files[1]), "error")]
    )
    assert report.to_dict("fail")["invalid_pairs"] == ["image_0_nucleus"]
