"""fusemycell.inference.folders: the output-folder rules and the choice of inputs."""

import re

import pytest

from fusemycell.errors import UserError
from fusemycell.inference.folders import (
    NoInputError,
    UnsafeOutputError,
    check_output_folder,
    check_output_name,
    input_folder,
    select_inputs,
)


def test_the_output_may_not_be_the_input_or_raw_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.tif").write_bytes(b"")
    with pytest.raises(UnsafeOutputError, match="is the input folder"):
        check_output_folder(tmp_path / "in" / "one.tif", tmp_path / "in/", tmp_path / "raw")  # a file's folder
    with pytest.raises(UnsafeOutputError, match=r"is the raw folder \(raw_dir\)"):
        check_output_folder(tmp_path / "in", tmp_path / "raw", tmp_path / "raw")
    with pytest.raises(UnsafeOutputError, match="is inside the raw folder"):  # raw folders are read recursively
        check_output_folder(tmp_path / "in", tmp_path / "raw" / "predictions", tmp_path / "raw")
    with pytest.raises(UnsafeOutputError, match="is inside the input folder"):
        check_output_folder(tmp_path / "in", tmp_path / "in" / "predictions", tmp_path / "raw")
    check_output_folder(tmp_path / "in", tmp_path / "out", tmp_path / "raw")
    assert input_folder(tmp_path / "in" / "one.tif") == (tmp_path / "in").resolve()
    (tmp_path / "in" / "x_angle.ome.zarr").mkdir()  # an OME-Zarr image is one input, in its folder
    with pytest.raises(UnsafeOutputError, match="is the input folder"):
        check_output_folder(tmp_path / "in" / "x_angle.ome.zarr", tmp_path / "in", tmp_path / "raw")


def test_the_output_may_not_hold_fused_volumes(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "image_3_membrane_angle.tif").write_bytes(b"")  # an earlier prediction: fine
    check_output_folder(tmp_path / "in", tmp_path / "out", tmp_path / "raw")
    (tmp_path / "out" / "image_3_membrane_FUSED.tif").write_bytes(b"")
    with pytest.raises(UnsafeOutputError, match="holds raw angle/fused pairs.*image_3_membrane_FUSED.tif"):
        check_output_folder(tmp_path / "in", tmp_path / "out", tmp_path / "raw")


def test_fused_targets_are_skipped_in_any_case():
    files = {"a_angle.tif": "/a", "image_1_nucleus_fused.TIF": "/b", "X_FUSED.tiff": "/c"}
    selection = select_inputs(files, "/in")
    assert selection.predict == {"a_angle.tif": "/a"}
    assert selection.skipped_fused == ["image_1_nucleus_fused.TIF", "X_FUSED.tiff"]


def test_nothing_to_predict_is_a_user_error_saying_why_in_each_commands_words():
    with pytest.raises(NoInputError, match="no .tif/.tiff file or .ome.zarr image in inference.input_dir /in") as empty:
        select_inputs({}, "/in")
    assert str(empty.value).endswith(
        "give the folder of the volumes, or one file, as --params inference.input_dir=FOLDER"
    )
    assert empty.value.message({"inference.input_dir": "INPUT"}).endswith("or one file, as INPUT")
    with pytest.raises(NoInputError, match="/in holds only fused volumes") as fused:
        select_inputs({"image_1_nucleus_fused.tif": "/b"}, "/in")
    assert fused.value.message({"inference.input_dir": "INPUT"}).endswith("give the angle files as INPUT")


def test_an_output_named_as_a_format_predictions_are_not_written_in_is_refused(tmp_path):
    stack = tmp_path / "stack.tif"
    stack.write_bytes(b"")
    for name, suffix in (("x.ome.zarr", ".ome.zarr"), ("x.zarr/", ".zarr"), ("x.png", ".png"), ("X.H5", ".h5")):
        with pytest.raises(UnsafeOutputError, match=f"predictions are not written as {re.escape(suffix)} files") as no:
            check_output_folder(stack, tmp_path / "out" / name, None)
        assert isinstance(no.value, UserError) and not (tmp_path / "out").exists()
        assert no.value.message({"inference.output_dir": "OUTPUT"}).startswith(f"OUTPUT {tmp_path / 'out'}")
        assert "inference.output_dir" in str(no.value)
    check_output_name(tmp_path / "pred.v2")  # a folder name with a dot is a folder
    check_output_name(tmp_path / "p.TIFF")
    (tmp_path / "old.h5").mkdir()  # an existing folder of that name is a folder
    check_output_name(tmp_path / "old.h5")
    (tmp_path / "im.ome.zarr").mkdir()  # but an OME-Zarr image is an image, not a folder of predictions
    with pytest.raises(UnsafeOutputError, match="not written as .ome.zarr files"):
        check_output_name(tmp_path / "im.ome.zarr")


def test_one_input_file_may_have_its_output_next_to_it(tmp_path):
    (tmp_path / "data").mkdir()
    stack = tmp_path / "data" / "stack.tif"
    stack.write_bytes(b"")
    check_output_folder(stack, tmp_path / "data" / "pred", None)  # inside the file's folder: fine
    check_output_folder(stack, tmp_path / "data" / "stack_fused.tif", None)  # one file, named
    with pytest.raises(UnsafeOutputError, match="is the input .*stack.tif itself"):
        check_output_folder(stack, stack, None)
    with pytest.raises(UnsafeOutputError, match="is the input folder"):  # the prediction would take its name
        check_output_folder(stack, tmp_path / "data", None)
    with pytest.raises(UnsafeOutputError, match=r"is inside the raw folder \(raw_dir\)"):  # protections stay
        check_output_folder(stack, tmp_path / "data" / "pred", tmp_path / "data")


def test_a_folder_of_inputs_goes_into_a_folder_not_a_tif(tmp_path):
    (tmp_path / "views").mkdir()
    with pytest.raises(UnsafeOutputError, match=r"out.tif names one TIFF file, but the input .*views is a folder"):
        check_output_folder(tmp_path / "views", tmp_path / "out.tif", None)
    (tmp_path / "out.tif").mkdir()  # an existing folder named *.tif is a folder
    check_output_folder(tmp_path / "views", tmp_path / "out.tif", None)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "image_1_nucleus_fused.tif").write_bytes(b"")
    (tmp_path / "one.tif").write_bytes(b"")
    with pytest.raises(UnsafeOutputError, match="holds raw angle/fused pairs"):  # a file's folder is checked
        check_output_folder(tmp_path / "one.tif", tmp_path / "pred" / "p.tif", None)
