"""A run says what a user needs: known third-party notices silenced, Kedro's dataset lines below INFO,
MLflow runs named after what ran."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import mlflow
import pytest
import tomllib

from fusemycell.io.pairs import forget_reported_files, pair_files
from fusemycell.run_messages import kedro_usage_error, run_name, silence_known_notices
from tests.conftest import PROJECT_ROOT, run_kedro


def test_run_names_say_which_pipelines_ran_and_where():
    assert run_name(["training"], "mac") == "training (env mac)"
    assert run_name(None, "test") == "simulation+preprocessing+patching+training+evaluation (env test)"
    assert run_name(["__default__"], None) == "simulation+preprocessing+patching+training+evaluation (env local)"
    assert run_name(["preprocessing", "training"], "cloud") == "preprocessing+training (env cloud)"


def test_known_notices_are_silenced_and_others_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_notices()
        # MLflow colours its notice: the filter must match after the colour code
        warnings.warn("\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m", stacklevel=1)
        warnings.warn("Constant folding - Only steps=1 can be constant folded for opset >= 10", stacklevel=1)
        warnings.warn("a warning about your data", stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning about your data"]

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    pyfunc = logging.getLogger("mlflow.pyfunc")
    pyfunc.addHandler(handler)
    try:
        pyfunc.warning("Passing a Python object as `python_model` causes it to be serialized using CloudPickle, ...")
        pyfunc.warning("model signature is missing")
    finally:
        pyfunc.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["model signature is missing"]


def test_ignored_files_are_said_once_until_the_next_run(caplog):
    files = ["d/image_0_nucleus_angle.tif", "d/notes.tif"]
    forget_reported_files()
    with caplog.at_level(logging.WARNING, logger="fusemycell.io.pairs"):
        pair_files(files, root="d")
        pair_files(files, root="d")
        assert sum("file(s) ignored" in r.getMessage() for r in caplog.records) == 1
        forget_reported_files()
        pair_files(files, root="d")
    assert sum("file(s) ignored" in r.getMessage() for r in caplog.records) == 2


def _kedro_init_entry_point() -> str:
    entry_points = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    (target,) = entry_points["kedro.init"].values()
    return target


def test_the_kedro_init_entry_point_silences_before_plugins_load():
    assert _kedro_init_entry_point() == "fusemycell.run_messages:silence_known_notices"


def _with_entry_point(folder: Path) -> dict[str, str]:
    """PYTHONPATH for a ``kedro`` process that sees pyproject's ``kedro.init`` entry point.

    ``pip install -e .`` registers it; an environment installed before it existed gets it from a
    minimal distribution in ``folder`` (the same entry point, the same target).
    """
    from importlib.metadata import entry_points

    paths = [p for p in sys.path if p]
    if not any(ep.value == _kedro_init_entry_point() for ep in entry_points(group="kedro.init")):
        info = folder / "fusemycell_entry_points-0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fusemycell-entry-points\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[kedro.init]\nfusemycell_quiet = {_kedro_init_entry_point()}\n")
        paths.insert(0, str(folder))
    return {"PYTHONPATH": ":".join(paths), "COLUMNS": "80"}


@pytest.mark.slow
def test_the_main_job_prints_what_a_user_needs(kedro_project, tmp_path):
    run = run_kedro(kedro_project, "run", "--env", "test", **_with_entry_point(tmp_path / "entry_points"))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    output = run.stdout + run.stderr
    for noise in (
        "Loading data from",
        "Saving data to",
        "Completed 3 out of",
        "Add type hints",
        "Constant folding",
        "CloudPickle",
        "Downloading artifacts",
        "Registering new custom resolver",
        "No typed parameter",
        "as logging configuration",
    ):
        assert noise not in output, noise
    for needed in ("Running node: train_fusion_model", "epoch 2/2", "fusemycell run finished:", "test N_SSIM"):
        assert needed in output, needed
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) < 100, "\n".join(lines)
    # at 80 columns, off a terminal: one line per record, never wrapped at the width (Rich would)
    epoch_lines = [line for line in lines if "epoch 2/2" in line]
    assert epoch_lines and all(len(line) > 80 for line in epoch_lines), "\n".join(lines)
    # the memory peaks are one table at the end, not a line per node
    assert output.count("memory peaks (") == 1
    assert "peaked at" not in output
    mlflow.set_tracking_uri(f"sqlite:///{(kedro_project / 'mlflow.db').as_posix()}")
    names = mlflow.search_runs(experiment_names=["fusemycell"])["tags.mlflow.runName"].tolist()
    assert names == ["simulation+preprocessing+patching+training+evaluation (env test)"]


def test_a_dict_logged_as_the_one_argument_reads_as_the_dict(caplog):
    """Pipelines log counts as a dict; a pytest plugin's record factory (napari's) once turned it into its keys."""
    import logging

    logging.getLogger("fusemycell.test").warning("split by volume: %s", {"train": 2, "val": 1})
    assert "split by volume: {'train': 2, 'val': 1}" in caplog.text


def test_kedros_errors_about_the_command_line_read_in_one_line():
    # as kedro.framework.session raises it
    misspelt = ValueError(
        "Failed to find the pipeline named 'trainng'. It needs to be generated and returned by the "
        "'register_pipelines' function. Did you mean one of these instead?\n    training\n    patching"
    )
    line = kedro_usage_error(misspelt)
    assert line is not None and "\n" not in line
    assert line.startswith("Failed to find the pipeline named 'trainng'.")
    assert "Did you mean: training, patching?" in line
    assert "register_pipelines" not in line
    assert kedro_usage_error(ValueError("Pipeline does not contain nodes named ['nonode'].")) == (
        "Pipeline does not contain nodes named ['nonode']."
    )
    # anything else is not Kedro's usage error, even a ValueError
    assert kedro_usage_error(ValueError("could not convert string to float")) is None
    assert kedro_usage_error(KeyError("Failed to find the pipeline named 'x'")) is None


def test_rich_handlers_become_one_line_records_on_a_terminal_too():
    """Rich wraps a record at its console's width, breaking a path mid-name; the project's handler never does."""
    import io

    from rich.console import Console
    from rich.logging import RichHandler

    from fusemycell.run_messages import OneLineHandler, one_line_records

    logger = logging.getLogger("fusemycell.test.terminal")
    logger.propagate = False
    stream = io.StringIO()
    rich = RichHandler(console=Console(file=stream, force_terminal=True, width=60))
    logger.addHandler(rich)
    try:
        assert one_line_records(logger) == 1 and one_line_records(logger) == 0
        (handler,) = logger.handlers
        assert isinstance(handler, OneLineHandler) and handler.stream is stream
        path = "/data/" + "a_rather_long_folder_name/" * 6 + "image_3_nucleus_angle.tif"
        logger.warning("wrote %s", path)
        (line,) = stream.getvalue().splitlines()
        assert line.endswith(f"wrote {path}") and len(line) > 60
    finally:
        logger.handlers.clear()
        logger.propagate = True


def test_a_commands_logging_shows_its_own_records_only_and_is_put_back():
    """fusemycell predict: fusemycell's records, one line each; Kedro's, MLflow's, PyTorch's stopped at their source."""
    import io

    from fusemycell.run_messages import THIRD_PARTY_LOGGERS, CommandLogging

    root = logging.getLogger()
    before_handlers, before_level = list(root.handlers), logging.getLogger("kedro").level
    stream = io.StringIO()
    with CommandLogging(quiet=["fusemycell.datasets.tiff_folder_dataset"], stream=stream):
        assert all(logging.getLogger(name).level == logging.ERROR for name in THIRD_PARTY_LOGGERS)
        for name in ("kedro.runner", "kedro_mlflow.framework.hooks", "mlflow.tracking", "torch.onnx", "alembic"):
            logging.getLogger(name).warning("a notice of %s", name)
        logging.getLogger("fusemycell.datasets.tiff_folder_dataset").info("wrote /out/a.tif")  # quiet: WARNING+
        logging.getLogger("fusemycell.pipelines.inference.nodes").info("predicting 1 volume of /in/a.tif")
        logging.getLogger("fusemycell.inference.apply").warning("a.tif: voxel size z 3.0 um is outside")
    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "INFO    predicting 1 volume of /in/a.tif",
        "WARNING a.tif: voxel size z 3.0 um is outside",
    ]
    assert root.handlers == before_handlers and logging.getLogger("kedro").level == before_level


def test_a_commands_logging_words_user_messages_its_own_way_and_leaves_other_records():
    """A warning built from a UserMessage (or with a UserError attached) names settings as the command does."""
    import io

    from fusemycell.errors import Setting, UserError, UserMessage
    from fusemycell.run_messages import CommandLogging

    mode = Setting("inference.outside_training", "base", assignment=False)
    line = UserMessage("a.tif: outside; the blurred input is written ({mode})", mode=mode)
    names = {"inference.outside_training": "--outside-training", "inference.output_dir": "OUTPUT"}
    stream = io.StringIO()
    logger = logging.getLogger("fusemycell.inference.apply")
    with CommandLogging(stream=stream, names=names):
        logger.warning("%s", line)
        logger.warning(line)
        logger.warning("kept as written: inference.outside_training: %s", "base")  # plain text: not reworded
        try:
            raise UserError("{output} is busy", output=Setting("inference.output_dir", "FOLDER"))
        except UserError:
            logger.exception("could not write")
    lines = [line.split(" ", 2)[2].strip() for line in stream.getvalue().splitlines()]
    assert lines == [
        "a.tif: outside; the blurred input is written (--outside-training base)",
        "a.tif: outside; the blurred input is written (--outside-training base)",
        "kept as written: inference.outside_training: base",
        "could not write (UserError: OUTPUT is busy)",
    ]
    plain = io.StringIO()  # without names: kedro run's words
    with CommandLogging(stream=plain):
        logger.warning("%s", line)
    assert plain.getvalue().rstrip().endswith("(inference.outside_training: base)")
