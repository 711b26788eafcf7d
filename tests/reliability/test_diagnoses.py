"""Wrong inputs named for what they are, with what to do, in a line a person reads (never a library's traceback).

Each test reproduces a diagnosis that was wrong or unclear: an ONNX file taken for a pickled model,
ONNX Runtime's traceback for a missing or damaged export, "not found" for a folder that exists, "file
truncated" for a file that is not, and lists that could not be given on the command line at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fusemycell.cli import is_user_error
from tests.conftest import inference_report, run_kedro, run_session

INFERENCE = {"device": "cpu", "amp": False}


def _inputs(project: Path, name: str) -> Path:
    folder = project / name
    folder.mkdir(exist_ok=True)
    shutil.copy(project / "data" / "01_raw" / "synthetic" / "image_0_nucleus_angle.tif", folder)
    return folder


def _refusal(project: Path, **inference) -> BaseException:
    """The error that stops an inference run with these parameters (the CLI prints it, without traceback)."""
    with pytest.raises(Exception) as raised:  # noqa: PT011 - each test checks the message itself
        run_session(project, ["inference"], inference={**INFERENCE, **inference})
    assert is_user_error(raised.value), raised.value  # `kedro run` prints the message, not a traceback
    return raised.value


def test_an_onnx_file_given_as_the_model_is_called_an_onnx_file_with_the_onnx_backend_named(evaluated_project):
    onnx = evaluated_project / "data" / "06_models" / "fusemycell_unet.onnx"
    out = evaluated_project / "out_onnx_as_model"
    error = _refusal(
        evaluated_project,
        model_uri=str(onnx),
        input_dir=str(_inputs(evaluated_project, "in_onnx_as_model")),
        output_dir=str(out),
    )
    message = str(error)
    assert "fusemycell_unet.onnx: an ONNX file, not a fusemycell model file (.pt)" in message
    assert "inference.backend: onnx" in message and "inference.onnx_path" in message and "pickled" not in message
    report = inference_report(evaluated_project, out)
    assert report["status"] == "failed" and "an ONNX file" in report["reason"]


@pytest.mark.parametrize(
    ("content", "phrase"),
    [(None, "ONNX model file not found"), (b"\x08\x07 not an ONNX graph", "not a readable ONNX model")],
    ids=["missing", "corrupt"],
)
def test_the_onnx_backend_with_a_missing_or_corrupt_export_says_so_in_one_line(evaluated_project, content, phrase):
    onnx = evaluated_project / f"export_{'missing' if content is None else 'corrupt'}.onnx"
    if content is not None:
        onnx.write_bytes(content)
    error = _refusal(
        evaluated_project,
        backend="onnx",
        onnx_path=str(onnx),
        input_dir=str(_inputs(evaluated_project, "in_onnx_backend")),
        output_dir=str(evaluated_project / "out_onnx_backend"),
    )
    message = str(error)
    assert f"{onnx}: {phrase}" in message and "inference.onnx_path" in message
    assert "\n" not in message.split(f"{onnx}:")[1]  # one line, no ONNX Runtime traceback


def test_a_folder_holding_only_a_sub_folder_says_sub_folders_are_not_searched(evaluated_project):
    outer = evaluated_project / "in_nested"
    outer.mkdir()
    (_inputs(evaluated_project, "in_nested_day_1")).rename(outer / "day_1")
    outer_error = _refusal(evaluated_project, input_dir=str(outer), output_dir=str(evaluated_project / "out_nested"))
    message = str(outer_error)
    assert "sub-folders are not searched" in message and "it holds 1 sub-folder(s): day_1" in message
    assert "not found" not in message


def test_list_parameters_on_the_command_line(evaluated_project):
    """Kedro's --params splits at commas: a tile is given as 8x32x32 and reaches the run."""
    out = evaluated_project / "out_tile_from_cli"
    inputs = _inputs(evaluated_project, "in_tile_from_cli")
    params = f"inference.tile_zyx=8x32x32,inference.input_dir={inputs},inference.output_dir={out},inference.device=cpu"
    result = run_kedro(evaluated_project, "run", "--pipelines", "inference", "--env", "test", "--params", params)
    assert result.returncode == 0, result.stdout + result.stderr
    report = inference_report(evaluated_project, out)
    assert report["status"] == "complete" and report["tile_zyx"] == [8, 32, 32]
    assert "inference report:" in result.stdout  # the run's summary says where its report is
