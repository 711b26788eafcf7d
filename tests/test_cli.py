"""The project's commands: errors you can fix in a few lines, hints that lead there in one step, fusemycell predict."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusemycell.io.formats import read_volume
from tests.conftest import copy_project, run_kedro

#: Kedro prints about 15 lines of start-up notices before any error; a fixable error adds a handful.
FEW_LINES = 45


def _output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


@pytest.mark.slow
def test_a_misspelt_parameter_reads_in_a_few_lines(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_kedro(project, "run", "--pipelines", "inference", "--env", "test", "--params", "inference.overlapp=1")
    output = _output(result)
    assert result.returncode == 1
    assert "Error: invalid parameters (1 problem):" in output and "did you mean 'inference.overlap'?" in output
    assert "Traceback" not in output and len(output.splitlines()) <= FEW_LINES


@pytest.mark.slow
def test_an_unknown_environment_reads_in_a_few_lines(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_kedro(project, "run", "--env", "macc")
    output = _output(result)
    assert result.returncode == 1 and "environment 'macc' not found" in output and "mac" in output
    assert "Traceback" not in output and len(output.splitlines()) <= FEW_LINES


@pytest.mark.slow
def test_a_missing_input_names_the_whole_command_with_the_users_env(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_kedro(project, "run", "--pipelines", "training", "--env", "test")
    output = _output(result)
    assert result.returncode == 1 and "Traceback" not in output
    assert "'kedro run --pipelines simulation,preprocessing,patching,training --env test'" in output.replace("\n", "")
    assert len(output.splitlines()) <= FEW_LINES
    result = run_kedro(
        project, "run", "--pipelines", "inference", "--env", "test", "--params", "inference.input_dir=nowhere"
    )
    assert result.returncode == 1 and "inference_inputs (nowhere) not found: check inference.input_dir" in _output(
        result
    )
    mine = ("--params", "raw_dir=data/01_raw/mine")  # your own folder that is not there: never "simulate into it"
    result = run_kedro(project, "run", "--pipelines", "preprocessing", "--env", "test", *mine)
    assert (
        result.returncode == 1 and "not found: check raw_dir" in _output(result) and "simulation" not in _output(result)
    )


@pytest.mark.slow
def test_the_full_traceback_on_request(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_kedro(project, "run", "--env", "test", "--params", "raw_dirr=x", FUSEMYCELL_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in _output(result) and "ParameterError" in _output(result)


def _fusemycell(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fusemycell", *args],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_fusemycell_help_lists_run_and_predict(tmp_path):
    result = _fusemycell(copy_project(tmp_path / "project"), "--help")
    assert result.returncode == 0
    commands = result.stdout.split("Commands:")[1]
    assert "predict" in commands and "run" in commands


@pytest.mark.slow
def test_fusemycell_predict_one_file(evaluated_project):
    source = evaluated_project / "data" / "01_raw" / "synthetic" / "image_1_membrane_angle.tif"
    out = evaluated_project / "predict_cli_out"
    result = _fusemycell(evaluated_project, "predict", str(source), str(out), "--env", "test")
    assert result.returncode == 0, _output(result)
    prediction = read_volume(out / source.name)
    assert prediction.shape == read_volume(source).shape and prediction.data.dtype == np.uint16
    again = _fusemycell(evaluated_project, "predict", str(source), str(source.parent), "--env", "test")
    assert again.returncode == 1 and "is the input folder" in _output(again) and "Traceback" not in _output(again)


def test_a_bug_inside_a_dataset_save_keeps_its_traceback():
    from kedro.io.core import DatasetError

    from fusemycell.cli import is_user_error
    from fusemycell.datasets.tiff_folder_dataset import TiffFolderDataset

    def kedro_wrapper(error: Exception) -> DatasetError:  # what Kedro's save wrapper raises
        try:
            raise DatasetError("Failed while saving data to dataset") from error
        except DatasetError as wrapped:
            return wrapped

    try:
        None.missing  # noqa: B018 - an AttributeError raised outside fusemycell's code: a bug
    except AttributeError as bug:
        assert not is_user_error(kedro_wrapper(bug))
    try:
        TiffFolderDataset(path="/nonexistent/folder").load()
    except DatasetError as refused:  # raised by fusemycell on purpose: a message for the user
        assert is_user_error(refused) and is_user_error(kedro_wrapper(refused))
