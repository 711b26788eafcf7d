"""The project's commands: errors you can fix in a few lines, hints that lead there in one step, fusemycell predict."""

import os
import re
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
    from fusemycell.models.model_file import save_model
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
        ("views", "x.ome.zarr"): "OUTPUT "
        + str(tmp_path / "x.ome.zarr")
        + ": predictions are not written as .ome.zarr",
        ("views/a_angle.tif", "x.png"): "OUTPUT " + str(tmp_path / "x.png") + ": predictions are not written as .png",
    }
    for args, expected in cases.items():
        result = _predict(tmp_path, *args)
        assert result.exit_code == 1 and expected in result.output, (args, result.output)
        assert not any(word in result.output for word in ("inference.", "--params", "not found")), result.output
    assert "Give a folder as OUTPUT" in _predict(tmp_path, "views", "out.tif").output
    assert "one .tif/.tiff file. Choose another name (OUTPUT)" in _predict(tmp_path, "views", "x.h5").output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view.png", "views"]  # no output folder made


def test_the_runs_messages_in_the_commands_words(tmp_path):
    """Errors that the pipeline raises, as fusemycell predict prints them: its arguments, not Kedro parameters.

    Each is a UserError raised where the problem is found; the command words its settings (no rewriting)."""
    from kedro.io.core import DatasetError

    from fusemycell.cli import PREDICT_NAMES, user_message
    from fusemycell.datasets import TiffFolderDataset
    from fusemycell.inference.folders import select_inputs
    from fusemycell.inference.onnx_backend import open_session
    from fusemycell.io.volume import Volume
    from fusemycell.run_planning import MissingInputError, PipelineShape, check_inputs

    (tmp_path / "out").mkdir()
    _stack(tmp_path / "out" / "theirs.tif")
    with pytest.raises(DatasetError) as foreign:
        volume = Volume(data=np.ones((2, 4, 4), np.uint16), spacing_zyx=SPACING_ZYX)
        TiffFolderDataset(path=tmp_path / "out").save({"theirs.tif": volume})
    with pytest.raises(ValueError) as empty:
        select_inputs({}, tmp_path)
    with pytest.raises(ValueError) as no_onnx:
        open_session(tmp_path / "fusemycell_unet.onnx", ["CPUExecutionProvider"])

    class Facts:  # the user's own input folder is not there
        def exists(self, name):
            return False

        def location(self, name):
            return "/data/nowhere"

        def user_chosen(self, name):
            return True

    with pytest.raises(MissingInputError) as missing:
        check_inputs(["inference_inputs"], {"inference": PipelineShape(frozenset(), frozenset())}, Facts(), {})
    errors = {"foreign": foreign, "empty": empty, "no_onnx": no_onnx, "missing": missing}
    worded = {key: user_message(error.value, PREDICT_NAMES) for key, error in errors.items()}
    assert None not in worded.values(), worded  # every one is the user's to fix, wherever it was raised
    assert "OUTPUT" in worded["foreign"] and "--overwrite" in worded["foreign"]
    assert worded["empty"].endswith("give the folder of the volumes, or one file, as INPUT")
    assert "--model" in worded["no_onnx"] and "--backend torch" in worded["no_onnx"]
    assert worded["missing"] == "inference_inputs (/data/nowhere) not found: check INPUT"
    for message in worded.values():
        assert "inference." not in message and "--params" not in message, message
    assert "inference.input_dir" in user_message(missing.value)  # kedro run's own words


def test_outside_any_project_says_what_to_do_in_one_line(tmp_path):
    from fusemycell.cli import find_project

    source = _stack(tmp_path / "data" / "stack.tif")
    result = _predict(tmp_path, str(source), str(tmp_path / "data" / "pred"))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: no model: pass --model a model file trained by fusemycell (e.g. --model ")
    assert "pyproject" not in result.output and "[tool.kedro]" not in result.output
    assert "0.17" not in result.output and not (tmp_path / "data" / "pred").exists()
    elsewhere = tmp_path / "model.pt"  # a model file outside any project: no project to keep the run's records
    elsewhere.write_bytes(b"")
    result = _predict(tmp_path, str(source), str(tmp_path / "data" / "pred"), "--model", str(elsewhere))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"--model {elsewhere}: not in a fusemycell project folder" in result.output
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
    assert not is_user_error(ValueError("a bug's message, even one raised by fusemycell's own code"))
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
    text = " ".join(output.split())  # the console may wrap long lines
    assert result.returncode == 1 and "inference_model (data/06_models/fusemycell_unet.pt) not found yet" in text
    assert "run 'kedro run --pipelines simulation,preprocessing,patching,training,inference --env test" in text
    assert f"--params inference.input_dir={source},inference.output_dir={tmp_path / 'made' / 'p.tif'}'" in text
    assert text.endswith("or choose another: --model (full traceback: FUSEMYCELL_TRACEBACK=1 fusemycell predict ...)")
    assert "inference.model_uri" not in output and "Traceback" not in output
    assert not (tmp_path / "made").exists()


@pytest.fixture(scope="module")
def narrow_model(predict_project) -> Path:
    """The tiny model of ``predict_project`` whose card says it was trained on 1 um planes only."""
    from fusemycell.models.domain import TrainingDomain, ValueRange
    from fusemycell.models.model_file import TrainedModel, load_model, save_model

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


# ------------------------------------------------------------------ fusemycell predict from any folder, as typed

#: A record as ``fusemycell predict`` prints it: ``12:03:04 INFO    message``.
RECORD = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +(?P<message>.*)$")
#: The messages of fusemycell's inference that a successful run shows (its own loggers'), one line each.
OWN_MESSAGES = ("predicting ", "writing ")
SUMMARY_LINE = re.compile(r"^(fusemycell predict finished:|  (predictions|inference report|MLflow run): +\S.*)$")


def _command() -> list[str]:
    """The ``fusemycell`` command of this environment, as a user types it (else ``python -m fusemycell``)."""
    script = Path(sys.executable).parent / "fusemycell"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "fusemycell"]


def _environment(**extra: str) -> dict[str, str]:
    # COLUMNS=80: what a console that is not a terminal (Rich's) wraps records at
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "80", **extra}


def _typed(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``fusemycell ARGS`` typed in ``cwd`` (a folder outside any project)."""
    return subprocess.run(
        [*_command(), *args], cwd=cwd, env=_environment(**env), capture_output=True, text=True, timeout=300, check=False
    )


def _absolute_paths(text: str) -> list[str]:
    """Every absolute path in ``text`` (one inside a ``sqlite:///`` URI too), as printed."""
    text = text.replace("sqlite:///", " ")
    found = re.findall(r"(?:^|[\s'\"(=])(/[^\s:;,()'\"\[\]]+)", text, flags=re.MULTILINE)
    return [path.rstrip(".") for path in found]


def _summary(lines: list[str]) -> dict[str, str]:
    return {
        label: value.strip()
        for label, _, value in (line.strip().partition(":") for line in lines if line.startswith("  "))
    }


@pytest.mark.slow
def test_predict_from_another_folder_says_little_in_that_folders_paths(predict_project, tmp_path):
    """From a folder outside the project, with --model: fusemycell's own lines only, a few, every path usable there."""
    work = tmp_path / "work"
    for index in range(3):
        _stack(work / "views" / f"image_{index}_nucleus_angle.tif", seed=index)
    model = predict_project / "data" / "06_models" / "fusemycell_unet.pt"
    result = _typed(work, "predict", "views", "pred", "--model", str(model), "--env", "test")
    output = _output(result)
    assert result.returncode == 0, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(output.splitlines()) <= 20, output
    # every line is fusemycell's: its inference's records or the closing summary (no Kedro, MLflow, PyTorch record)
    records = [RECORD.match(line) for line in lines]
    foreign = [
        line
        for line, record in zip(lines, records)
        if not (record and record["message"].startswith(OWN_MESSAGES)) and not SUMMARY_LINE.match(line)
    ]
    assert foreign == [], output
    assert sum(record is not None for record in records) >= 3, output  # a line per input, so a user sees it run
    summary = _summary(lines)
    assert summary["predictions"] == "pred", output  # relative to where the user stands
    assert sorted(p.name for p in (work / "pred").iterdir()) == [f"image_{i}_nucleus_angle.tif" for i in range(3)]
    report = Path(summary["inference report"])
    assert report.is_absolute() and report.is_relative_to(predict_project) and report.is_file(), output
    assert f"cd {predict_project} && kedro mlflow ui" in summary["MLflow run"]
    paths = _absolute_paths(output)
    assert str(work / "pred") in paths and str(report) in paths
    assert [path for path in paths if not Path(path).exists()] == [], output
    assert sorted(p.name for p in work.iterdir()) == ["pred", "views"]  # the run's records stay in the project


def _typed_on_a_terminal(cwd: Path, *args: str, columns: int = 60, **env: str) -> tuple[int, str]:
    """``fusemycell ARGS`` in ``cwd`` with a terminal ``columns`` wide as its output: exit status and the text
    left on the screen."""
    import fcntl
    import pty
    import struct
    import termios

    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen(
        [*_command(), *args],
        cwd=cwd,
        env=_environment(COLUMNS=str(columns), **env),
        stdin=side,
        stdout=side,
        stderr=side,
    )
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    # what stays on the screen: a line's text after its last carriage return (progress bars redraw and clear
    # their line, cutting their description to the width while they run)
    screen = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return process.wait(timeout=300), "\n".join(screen)


@pytest.mark.slow
def test_on_a_narrow_terminal_no_path_breaks_mid_name(predict_project, tmp_path):
    work = tmp_path / "a_folder_with_a_rather_long_name_for_a_sixty_column_terminal"
    _stack(work / "image_4_membrane_angle.tif")
    model = predict_project / "data" / "06_models" / "fusemycell_unet.pt"
    args = ("predict", "image_4_membrane_angle.tif", "pred", "--model", str(model), "--env", "test")
    # the log records, not the progress bars: a bar cuts its description to the width while it runs, then
    # clears its line (with two bars at once, by moving the cursor: more than this test replays)
    status, text = _typed_on_a_terminal(work, *args, FUSEMYCELL_PROGRESS="log")
    assert status == 0, text
    assert f"writing {work / 'pred'}: 1 file" in text, text  # longer than the terminal, on one line
    paths = _absolute_paths(text)
    assert str(model) in paths and [path for path in paths if not Path(path).exists()] == [], text


def test_without_a_model_outside_a_project_one_line_says_what_to_pass(tmp_path):
    _stack(tmp_path / "stack.tif")
    result = _typed(tmp_path, "predict", "stack.tif", "pred")
    output = _output(result)
    assert result.returncode == 1 and "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("Error: no model: pass --model a model file trained by fusemycell"), output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]


def test_the_traceback_on_request_for_the_command_lines_own_errors(tmp_path):
    """A new user set FUSEMYCELL_TRACEBACK=1 and saw none: the errors of the command line itself had none."""
    _stack(tmp_path / "stack.tif")
    for args, error in ((("stack.tif", "pred"), "ProjectNotFound"), (("missing.tif", "pred"), "ClickException")):
        result = _typed(tmp_path, "predict", *args, FUSEMYCELL_TRACEBACK="1")
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr and error in result.stderr, result.stderr
        assert result.stderr.rstrip().splitlines()[-1].startswith("Error: ")  # the message still ends it
        quiet = _typed(tmp_path, "predict", *args)
        assert "Traceback" not in _output(quiet)


#: ``fusemycell`` in a real process, with a bug put into the project's own code: ``check_output_folder`` raises a
#: plain ValueError, as a mistake in fusemycell would (not a UserError).
_WITH_A_BUG = """
import sys
import fusemycell.cli
def check_output_folder(*args):
    raise ValueError("a bug in fusemycell's own code")
fusemycell.cli.check_output_folder = check_output_folder
from fusemycell.__main__ import main
sys.argv = ["fusemycell", *sys.argv[1:]]
main()
"""


def test_a_user_error_prints_its_message_and_its_traceback_on_request(tmp_path):
    """A real process: the message in the command's words and the hint; with FUSEMYCELL_TRACEBACK=1 the traceback."""
    _stack(tmp_path / "stack.tif")
    quiet = _typed(tmp_path, "predict", "stack.tif", "pred.ome.zarr")
    lines = quiet.stderr.strip().splitlines()
    assert quiet.returncode == 1 and "Traceback" not in _output(quiet), _output(quiet)
    assert lines[-2].startswith(f"Error: OUTPUT {tmp_path / 'pred.ome.zarr'}: predictions are not written as .ome.zarr")
    assert lines[-1] == "(full traceback: FUSEMYCELL_TRACEBACK=1 fusemycell predict ...)"
    shown = _typed(tmp_path, "predict", "stack.tif", "pred.ome.zarr", FUSEMYCELL_TRACEBACK="1")
    assert shown.returncode == 1 and "Traceback (most recent call last)" in shown.stderr, shown.stderr
    assert "UnsafeOutputError" in shown.stderr and "check_output_name" in shown.stderr  # where it was raised
    assert shown.stderr.rstrip().splitlines()[-1].startswith("Error: OUTPUT ")  # the message still ends it
    assert not (tmp_path / "pred.ome.zarr").exists()


def test_a_bug_always_shows_its_traceback_in_a_real_process(tmp_path):
    """A ValueError raised by fusemycell's own code is a bug, not a message for the user: its traceback is shown."""
    _stack(tmp_path / "stack.tif")
    for env in ({}, {"FUSEMYCELL_TRACEBACK": "1"}):
        result = subprocess.run(
            [sys.executable, "-c", _WITH_A_BUG, "predict", "stack.tif", "pred"],
            cwd=tmp_path,
            env=_environment(**env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 1, _output(result)
        assert "Traceback (most recent call last)" in result.stderr and "in check_output_folder" in result.stderr
        assert result.stderr.rstrip().endswith("ValueError: a bug in fusemycell's own code"), result.stderr
        assert "\nError: a bug" not in result.stderr and "full traceback:" not in result.stderr


@pytest.mark.slow
def test_the_traceback_on_request_for_an_error_inside_the_run(predict_project, tmp_path):
    fused = _stack(tmp_path / "image_2_nucleus_fused.tif")
    model = predict_project / "data" / "06_models" / "fusemycell_unet.pt"
    args = ("predict", str(fused), "pred", "--model", str(model), "--env", "test")
    result = _typed(tmp_path, *args, FUSEMYCELL_TRACEBACK="true")
    output = _output(result)
    assert result.returncode == 1 and "Traceback" in output and "holds only fused volumes" in output, output
    assert not (tmp_path / "pred").exists()


def test_the_runs_summary_is_said_again_for_the_folder_the_user_is_in(tmp_path):
    """What the run printed (in the project: the memory table, then its summary), as fusemycell predict prints it."""
    from fusemycell.cli import predict_summary

    project, here = tmp_path / "project", tmp_path / "work"
    printed = (
        "\nmemory peaks (each node's run and the save of its outputs):\n  node  RSS MB\n  inference.plan  530\n"
        "\nfusemycell run finished:\n"
        f"  predictions:          {here / 'pred'}\n"
        "  inference report:     data/08_reporting/inference/pred-e7fdafa2.json\n"
        f"  MLflow run:           abc in sqlite:///{project}/mlflow.db  (browse: kedro mlflow ui)\n"
        "  lineage graph:        kedro viz run\n"
    )
    assert predict_summary(printed, project, here).splitlines() == [
        "fusemycell predict finished:",
        "  predictions:      pred",  # inside the user's folder: relative to it
        f"  inference report: {project / 'data/08_reporting/inference/pred-e7fdafa2.json'}",  # outside: absolute
        f"  MLflow run:       abc in sqlite:///{project}/mlflow.db  (browse: cd {project} && kedro mlflow ui)",
    ]
    assert predict_summary("a line of a library\n", project, here) == "a line of a library"  # kept as it was
