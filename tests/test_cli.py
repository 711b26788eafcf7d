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
def test_a_misspelt_pipeline_reads_in_a_few_lines(tmp_path):
    project = copy_project(tmp_path / "project")
    result = run_kedro(project, "run", "--pipelines", "trainng", "--env", "test")
    output = _output(result)
    assert result.returncode == 1
    assert "Failed to find the pipeline named 'trainng'. Did you mean: training?" in output
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


@pytest.fixture(scope="module")
def predict_project(tmp_path_factory) -> Path:
    """A project copy holding a tiny trained model at its default place, ``data/06_models/fusemycell_unet.pt``."""
    from fusemycell.models.checkpoint import save_model
    from tests.training.conftest import train_tiny_model

    folder = tmp_path_factory.mktemp("predict")
    project = copy_project(folder / "project")
    model = train_tiny_model(folder, epochs=1, volumes=(4, 2), spacing_zyx=SPACING_ZYX)
    save_model(model, project / "data" / "06_models" / "fusemycell_unet.pt")
    return project


#: The voxel size of the tiny model and of the stacks it predicts.
SPACING_ZYX = (1.0, 0.5, 0.5)


def _stack(path: Path, seed: int = 0) -> Path:
    """A small uint16 single view (ZYX) at ``path``."""
    from fusemycell.io.tiff import write_volume

    data = np.random.default_rng(seed).integers(100, 4000, (8, 24, 24), dtype=np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(path, data, SPACING_ZYX)
    return path


@pytest.mark.slow
def test_fusemycell_predict_one_file(predict_project):
    source = _stack(predict_project / "data" / "01_raw" / "mine" / "image_1_membrane_angle.tif")
    out = predict_project / "predict_cli_out"
    result = _fusemycell(predict_project, "predict", str(source), str(out), "--env", "test")
    assert result.returncode == 0, _output(result)
    prediction = read_volume(out / source.name)
    assert prediction.shape == read_volume(source).shape and prediction.data.dtype == np.uint16
    again = _fusemycell(predict_project, "predict", str(source), str(source.parent), "--env", "test")
    assert again.returncode == 1 and "is the input folder" in _output(again) and "Traceback" not in _output(again)


@pytest.mark.slow
def test_predict_next_to_the_input_file_from_outside_the_project(predict_project, tmp_path):
    """``fusemycell predict /data/stack.tif /data/pred`` run elsewhere: the project is found from --model."""
    source = _stack(tmp_path / "data" / "stack.tif")
    model = predict_project / "data" / "06_models" / "fusemycell_unet.pt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = ("predict", "../data/stack.tif", "../data/pred", "--model", str(model), "--env", "test")
    result = _fusemycell(elsewhere, *args)
    assert result.returncode == 0, _output(result)
    assert sorted(p.name for p in (tmp_path / "data" / "pred").iterdir()) == ["stack.tif"]
    assert read_volume(tmp_path / "data" / "pred" / "stack.tif").shape == read_volume(source).shape
    assert list(elsewhere.iterdir()) == []  # nothing of the run (mlflow.db, logs) lands in the working directory


@pytest.mark.slow
def test_a_tif_output_is_exactly_that_file(predict_project, tmp_path):
    source = _stack(tmp_path / "data" / "stack.tif")
    target = tmp_path / "results" / "stack_fused.tif"
    result = _fusemycell(predict_project, "predict", str(source), str(target), "--env", "test")
    assert result.returncode == 0, _output(result)
    assert sorted(p.name for p in target.parent.iterdir()) == ["stack_fused.tif"]
    assert read_volume(target).shape == read_volume(source).shape


@pytest.mark.slow
def test_a_failed_run_speaks_the_commands_words_and_leaves_no_folder(predict_project, tmp_path):
    """The run fails inside the pipeline (a fused target is no single view), after the output folder was taken."""
    fused = _stack(tmp_path / "image_2_nucleus_fused.tif")
    for output in (tmp_path / "made" / "pred", tmp_path / "made" / "pred.tif"):
        result = _fusemycell(predict_project, "predict", str(fused), str(output), "--env", "test")
        output_text = _output(result)
        assert result.returncode == 1 and "holds only fused volumes" in output_text, output_text
        assert "give the angle files as INPUT" in output_text and "inference.input_dir" not in output_text
        assert "Traceback" not in output_text and "FUSEMYCELL_TRACEBACK=1 fusemycell predict" in output_text
        assert not (tmp_path / "made").exists()


def test_predict_help_shows_examples():
    from click.testing import CliRunner

    from fusemycell.cli import cli

    result = CliRunner().invoke(cli, ["predict", "--help"])
    assert result.exit_code == 0
    examples = result.output.split("Examples:")[1]
    assert "fusemycell predict /data/stack.tif /data/pred\n" in examples  # kept on its own line (\b)
    assert "fusemycell predict /data/stack.tif /data/stack_fused.tif" in examples


def _predict(cwd: Path, *args: str):
    """``fusemycell predict ARGS`` in ``cwd``, in this process (no Kedro session starts for these errors)."""
    from click.testing import CliRunner

    from fusemycell.cli import cli

    here = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, ["predict", *args])
    finally:
        os.chdir(here)


def test_predict_names_its_arguments_and_what_a_file_is(tmp_path):
    (tmp_path / "view.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(24))
    _stack(tmp_path / "views" / "a_angle.tif")
    cases = {
        ("view.png", "out"): "INPUT " + str(tmp_path / "view.png") + ": a PNG image, not a TIFF stack",
        ("missing.tif", "out"): "INPUT " + str(tmp_path / "missing.tif") + ": no such file or folder",
        ("views", "out.tif"): "but the input " + str(tmp_path / "views") + " is a folder",
        ("views", "views/pred"): "OUTPUT " + str(tmp_path / "views" / "pred") + " is inside the input folder",
        ("views", "out", "--model", "nothere.pt"): "--model " + str(tmp_path / "nothere.pt") + ": no such file",
    }
    for args, expected in cases.items():
        result = _predict(tmp_path, *args)
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
        assert not any(word in result.output for word in ("inference.", "--params", "not found")), result.output
    assert "Give a folder as OUTPUT" in _predict(tmp_path, "views", "out.tif").output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.png", "views"]  # no output folder made


def test_the_runs_messages_in_the_commands_words(tmp_path):
    """Messages that the pipeline raises, as fusemycell predict prints them: its arguments, not Kedro parameters."""
    from kedro.io.core import DatasetError

    from fusemycell.cli import in_predict_words
    from fusemycell.datasets import TiffFolderDataset
    from fusemycell.inference.folders import select_inputs
    from fusemycell.inference.onnx_backend import OnnxModelError, open_session
    from fusemycell.io.volume import Volume

    (tmp_path / "out").mkdir()
    _stack(tmp_path / "out" / "theirs.tif")
    with pytest.raises(DatasetError) as foreign:
        volume = Volume(data=np.ones((2, 4, 4), np.uint16), spacing_zyx=SPACING_ZYX)
        TiffFolderDataset(path=tmp_path / "out").save({"theirs.tif": volume})
    with pytest.raises(ValueError) as empty:
        select_inputs({}, tmp_path)
    with pytest.raises(OnnxModelError) as no_onnx:
        open_session(tmp_path / "fusemycell_unet.onnx", ["CPUExecutionProvider"])
    missing = "inference_inputs (/data/nowhere) not found: check inference.input_dir"  # run_planning's words
    translated = [in_predict_words(str(e.value)) for e in (foreign, empty, no_onnx)] + [in_predict_words(missing)]
    assert "Choose an empty OUTPUT folder, or add --overwrite to replace them" in translated[0]
    assert "give INPUT as the folder of the volumes, or one file" in translated[1]
    assert "check the .onnx file next to --model (written by training), or use --backend torch" in translated[2]
    assert translated[3] == "INPUT /data/nowhere: no such file or folder"
    for message in translated:
        assert "inference." not in message and "--params" not in message


def test_outside_any_project_says_what_to_do_in_one_line(tmp_path):
    from fusemycell.cli import find_project

    source = _stack(tmp_path / "data" / "stack.tif")
    result = _predict(tmp_path, str(source), str(tmp_path / "data" / "pred"))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "no fusemycell project" in result.output and "run fusemycell predict in the project folder" in result.output
    assert "0.17" not in result.output and not (tmp_path / "data" / "pred").exists()
    project = copy_project(tmp_path / "project")  # a fusemycell project: found from any folder below it
    (project / "data" / "06_models" / "sub").mkdir(parents=True)
    assert find_project(tmp_path, project / "data" / "06_models" / "sub") == project
    (tmp_path / "other").mkdir()  # another Kedro project is not this one
    (tmp_path / "other" / "pyproject.toml").write_text('[tool.kedro]\npackage_name = "spaceflights"\n')
    assert find_project(tmp_path / "other") is None


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


@pytest.mark.slow
def test_a_run_stopped_before_its_first_node_leaves_no_folder(tmp_path):
    """No model in the project: the run takes the output folder, then stops before the pipeline starts."""
    project = copy_project(tmp_path / "project")
    source = _stack(tmp_path / "data" / "stack.tif")
    result = _fusemycell(project, "predict", str(source), str(tmp_path / "made" / "p.tif"), "--env", "test")
    output = _output(result)
    assert result.returncode == 1 and "no model at data/06_models/fusemycell_unet.pt (the default of --model)" in output
    assert "train one with 'kedro run --pipelines simulation,preprocessing,patching,training --env test'" in output
    assert "inference." not in output and "Traceback" not in output
    assert not (tmp_path / "made").exists()


@pytest.fixture(scope="module")
def narrow_model(predict_project) -> Path:
    """The tiny model of ``predict_project`` whose card says it was trained on 1 um planes only."""
    from fusemycell.models.checkpoint import TrainedModel, load_model, save_model
    from fusemycell.models.domain import TrainingDomain, ValueRange

    model = load_model(predict_project / "data" / "06_models" / "fusemycell_unet.pt")
    pixel, size = ValueRange(low=0.5, high=0.5), ValueRange(low=8, high=24)
    domain = TrainingDomain(
        volumes=1, spacing_zyx_um=(ValueRange(low=1.0, high=1.0), pixel, pixel), shape_zyx=(size,) * 3
    )
    narrow = TrainedModel(model.network, model.card.model_copy(update={"training_domain": domain}))
    return save_model(narrow, predict_project / "data" / "06_models" / "narrow.pt")


def _thin_planes_stack(folder: Path) -> Path:
    """A stack like :func:`_stack` but with planes 3 um apart (the narrow model saw 1 um only)."""
    from fusemycell.io.tiff import write_volume

    path = folder / "image_3_nucleus_angle.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).integers(100, 4000, (8, 24, 24), dtype=np.uint16)
    write_volume(path, data, (3.0, 0.5, 0.5))
    return path


@pytest.mark.slow
def test_an_input_outside_the_training_domain_gets_one_line_in_each_mode(predict_project, narrow_model, tmp_path):
    import json

    source = _thin_planes_stack(tmp_path / "in")
    expected = "image_3_nucleus_angle.tif: voxel size z 3.0 um is outside the training range 1.0 um; "
    outputs = {}
    for mode in ("warn", "base", "refuse"):
        out = tmp_path / f"out_{mode}"
        args = ("predict", str(source), str(out), "--model", str(narrow_model), "--env", "test")
        result = _fusemycell(predict_project, *args, "--outside-training", mode)
        text = " ".join(_output(result).split())  # the console may wrap long lines
        assert text.count(expected) == (2 if mode == "refuse" else 1), text  # refuse: the line, then the error
        assert "inference.outside_training" not in text  # the command's own words
        reports = list((predict_project / "data" / "08_reporting" / "inference").glob(f"out_{mode}-*.json"))
        report = json.loads(reports[0].read_text())
        assert report["outside_training"]["mode"] == mode
        assert report["outside_training"]["inputs"][0]["line"].startswith(expected)
        if mode == "refuse":
            assert result.returncode == 1 and "--outside-training refuse" in text and "Traceback" not in text
            assert report["failures"][0]["file"] == source.name and not (out / source.name).exists()
            continue
        assert result.returncode == 0, text
        outputs[mode] = read_volume(out / source.name).data[:]
    assert not np.array_equal(outputs["warn"], outputs["base"])  # base: the blurred input, not the network's
    inside = _stack(tmp_path / "in_domain" / "image_1_nucleus_angle.tif")  # 1 um planes: no line
    result = _fusemycell(
        predict_project, "predict", str(inside), str(tmp_path / "ok"), "--model", str(narrow_model), "--env", "test"
    )
    assert result.returncode == 0 and "outside the training range" not in _output(result)
