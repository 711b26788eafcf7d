import logging

import pytest

from fusemycell.io.pairs import PairingError, pair_files, parse_filename


def test_parse_challenge_names():
    name = parse_filename("data/01_raw/image_12_membrane_fused.tif")
    assert (name.image_id, name.channel, name.kind) == (12, "membrane", "fused")
    assert name.pair_key == "image_12_membrane"
    assert name.filename() == "image_12_membrane_fused.tif"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("image_3_actin_angle.tif", "unknown channel 'actin'"),
        ("image_x_nucleus_angle.tif", "not a FuseMyCell file name"),
        ("image_3_nucleus_view1.tif", "not a FuseMyCell file name"),
        ("notes.txt", "not a FuseMyCell file name"),
    ],
)
def test_bad_names_are_rejected_with_a_reason(name, problem):
    with pytest.raises(PairingError, match=problem):
        parse_filename(name)


def test_angles_pair_with_fused_by_id_and_channel(caplog):
    files = [
        "r/image_0_nucleus_angle.tif",
        "r/image_0_nucleus_fused.tif",
        "r/image_0_membrane_angle.tif",
        "r/image_0_membrane_fused.tif",
        "r/image_7_nucleus_angle.tif",  # angle alone: inference only
        "r/image_8_membrane_fused.tif",  # fused alone: unusable
        "r/readme.tif",
        "r/image_9_actin_angle.tif",
    ]
    with caplog.at_level(logging.WARNING):
        listing = pair_files(files, root="r")
    assert set(listing.pairs) == {"image_0_nucleus", "image_0_membrane", "image_7_nucleus", "image_8_membrane"}
    assert set(listing.complete) == {"image_0_nucleus", "image_0_membrane"}
    assert listing.pairs["image_0_nucleus"].angle == "r/image_0_nucleus_angle.tif"
    assert listing.pairs["image_0_nucleus"].fused == "r/image_0_nucleus_fused.tif"
    assert listing.pairs["image_7_nucleus"].fused is None
    # every file that does not fit is named
    assert "r/image_7_nucleus_angle.tif: angle without its fused" in caplog.text
    assert "r/image_8_membrane_fused.tif: fused volume without its angle" in caplog.text
    unmatched_warnings = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(unmatched_warnings) == 1  # one warning listing them all
    assert "readme.tif" in unmatched_warnings[0].getMessage()
    assert "image_9_actin_angle.tif (unknown channel 'actin'" in unmatched_warnings[0].getMessage()


def test_duplicate_ids_leave_that_pair_out_and_name_both_files(caplog):
    files = [
        "a/image_1_nucleus_angle.tif",
        "b/image_1_nucleus_angle.tif",
        "a/image_1_nucleus_fused.tif",
        "a/image_2_nucleus_angle.tif",
        "a/image_2_nucleus_fused.tif",
    ]
    with caplog.at_level(logging.WARNING):
        listing = pair_files(files)
    assert set(listing) == {"image_2_nucleus"}  # the good pair is kept
    assert listing.duplicates == {
        "image_1_nucleus_angle": ("a/image_1_nucleus_angle.tif", "b/image_1_nucleus_angle.tif")
    }
    assert "duplicate id: a/image_1_nucleus_angle.tif and b/image_1_nucleus_angle.tif" in caplog.text
