"""The project's commands: ``kedro run`` with errors a person can read, and ``fusemycell predict``.

Kedro picks up the ``cli`` group of this module: its ``run`` replaces Kedro's own (same options)
and ``predict`` is added next to it.

A problem the user can fix is a :class:`fusemycell.errors.UserError`, raised where it is found with
the settings it concerns as placeholders (or Kedro's own error about the command line, a misspelt
pipeline): the command prints its message in a few lines, in its own words (``fusemycell predict``
says OUTPUT where ``kedro run`` says ``--params inference.output_dir=FOLDER``: :data:`PREDICT_NAMES`),
and exits 1; ``FUSEMYCELL_TRACEBACK=1`` prints its traceback first. Any other exception is a bug
(or a library's own failure) and always shows its traceback. Nothing here reads another module's
message to decide what it is.

``fusemycell predict`` may run from any folder: its output is fusemycell's own records, one line each
(:class:`fusemycell.run_messages.CommandLogging`, worded with :data:`PREDICT_NAMES`), and a closing
summary whose paths are relative to the folder it was started in (when inside it) or absolute.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: Kedro's own dependency
    import tomli as tomllib

import fusemycell
from fusemycell.datasets.volume_sources import not_a_volume
from fusemycell.errors import find_user_error
from fusemycell.inference.folders import check_output_folder
from fusemycell.io.naming import TIFF_SUFFIXES
from fusemycell.run_messages import CommandLogging, kedro_usage_error

#: Set to 1 to see the whole traceback of every error.
TRACEBACK_VARIABLE = "FUSEMYCELL_TRACEBACK"
_PACKAGE = Path(fusemycell.__file__).resolve().parent

#: What ``fusemycell predict`` calls the parameters it sets: the words of its messages and of the log records of
#: the run it starts (:meth:`fusemycell.errors.UserError.message`).
PREDICT_NAMES: dict[str, str] = {
    "inference.input_dir": "INPUT",
    "inference.output_dir": "OUTPUT",
    "inference.model_uri": "--model",
    "inference.backend": "--backend",
    "inference.overwrite": "--overwrite",
    "inference.outside_training": "--outside-training",
    "inference.onnx_path": "the .onnx file next to --model",
}


def traceback_requested() -> bool:
    """``FUSEMYCELL_TRACEBACK`` is set to 1 (or true, yes, on)."""
    return os.environ.get(TRACEBACK_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def is_user_error(error: BaseException) -> bool:
    """A problem the user can fix, explained by its message (not a bug): a :class:`~fusemycell.errors.UserError`
    (also behind Kedro's ``DatasetError`` wrapper), or Kedro's own error about the command line."""
    return find_user_error(error) is not None or kedro_usage_error(error) is not None


def user_message(error: BaseException, names: Mapping[str, str] | None = None) -> str | None:
    """The message of a user error in a command's words (``names``; None: ``kedro run``'s); None for a bug."""
    usage = kedro_usage_error(error)
    if usage is not None:
        return usage
    found = find_user_error(error)
    return found.message(names) if found is not None else None


def report_error(error: BaseException, command: str = "kedro run", names: Mapping[str, str] | None = None) -> None:
    """Print a user error as its message and exit 1; any other exception (a bug) is raised again, traceback and all.

    ``command``: the command the traceback hint repeats; ``names``: how that command names the settings.
    With ``FUSEMYCELL_TRACEBACK=1`` the traceback of a user error is printed before its message.
    """
    message = user_message(error, names)
    if message is None:
        raise error
    if traceback_requested():
        traceback.print_exception(error, file=sys.stderr)
    click.secho(f"\nError: {message}", fg="red", err=True)
    if not traceback_requested():
        click.echo(f"(full traceback: {TRACEBACK_VARIABLE}=1 {command} ...)", err=True)
    sys.exit(1)


class _FriendlyCommand(click.Command):
    #: The command line a traceback hint repeats, and how its messages name the settings (None: as ``kedro run``).
    command_line = "kedro run"
    names: Mapping[str, str] | None = None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM (fusemycell.inference.run.Interrupted carries which)
            sys.exit(getattr(stop, "exit_status", 130))
        except click.ClickException as error:  # the command line's own errors (a missing INPUT, no model)
            if traceback_requested():
                traceback.print_exception(error, file=sys.stderr)
            raise
        except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs
            report_error(error, self.command_line, self.names)


class _PredictCommand(_FriendlyCommand):
    command_line = "fusemycell predict"
    names = PREDICT_NAMES


#: What ``fusemycell run --help`` says before Kedro's own words (``tests/test_doc_commands.py`` checks it names
#: every pipeline of :data:`fusemycell.pipeline_registry.PIPELINE_ORDER`).
RUN_HELP = """Run the project's pipelines, as `kedro run` does (the same options below).

\b
Pipelines (--pipelines, in data-flow order): simulation, preprocessing, patching,
  training, evaluation (the main job, run by default, simulation to evaluation),
  and inference (on its own, on the folder you name).
Environments (--env): mac (a laptop or any CPU: a small network, a 5-minute
  training budget), cloud (CUDA GPUs, one worker per GPU), test (tiny data,
  seconds). Without --env the base settings alone (hours on a laptop).
Your own data: --params raw_dir=data/01_raw/NAME (image_N_nucleus|membrane_
  angle|fused.tif; at least 3 pairs); its artefacts go to folders of its own.

\b
Examples:
  fusemycell run --env mac
  fusemycell run --pipelines training --env mac
  fusemycell run --pipelines preprocessing,patching,training,evaluation \\
      --env mac --params raw_dir=data/01_raw/fusemycell

Errors you can fix print in a few lines; FUSEMYCELL_TRACEBACK=1 shows all."""


@click.group(name="fusemycell")
def cli() -> None:
    """fusemycell: predict the fused light-sheet volume from a single view."""


run = _FriendlyCommand(
    name="run",
    params=list(kedro_run.params),
    callback=kedro_run.callback,
    help=RUN_HELP + "\n\n" + (kedro_run.help or ""),
    short_help="Run the pipelines (the main job by default).",
)
cli.add_command(run)


class ProjectNotFound(click.ClickException):
    """``fusemycell predict`` found no fusemycell project to run in; the message says what to do."""


def _kedro_package(folder: Path) -> str | None:
    """The ``[tool.kedro] package_name`` of ``folder/pyproject.toml`` (None: not a Kedro project)."""
    try:
        with open(folder / "pyproject.toml", "rb") as handle:
            kedro = tomllib.load(handle).get("tool", {}).get("kedro")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return kedro.get("package_name") if isinstance(kedro, dict) else None


def find_project(*starts: Path | None) -> Path | None:
    """The first fusemycell project (a ``pyproject.toml`` whose ``[tool.kedro]`` is this package's) at or above
    one of ``starts``, in order; None when there is none."""
    for start in starts:
        if start is None:
            continue
        for folder in [start, *start.parents]:
            if _kedro_package(folder) == _PACKAGE.name:
                return folder
    return None


#: Where training writes the model, in a project: what ``--model`` defaults to.
DEFAULT_MODEL = Path("data") / "06_models" / "fusemycell_unet.pt"


def _model_example() -> str:
    """A model file to name in a message: the installed project's trained model when there is one."""
    project = find_project(_PACKAGE)
    if project is not None and (project / DEFAULT_MODEL).is_file():
        return str(project / DEFAULT_MODEL)
    return str(Path("path") / "to" / DEFAULT_MODEL)


def no_project_message(here: Path, model: Path | None) -> str:
    """What ``fusemycell predict`` says, in one line, when it finds no project to run in."""
    if model is None:
        return (
            f"no model: pass --model a model file trained by fusemycell (e.g. --model {_model_example()}), "
            "or run fusemycell predict in the fusemycell project folder"
        )
    return (
        f"--model {model}: not in a fusemycell project folder; pass a model file inside one "
        f"(e.g. --model {_model_example()}): the run keeps its records there"
    )


def _for_the_user(location: str, project: Path, here: Path) -> str:
    """``location`` as printed by a run in ``project`` (relative to it, or absolute), for a user in ``here``:
    relative to ``here`` when inside it, absolute otherwise."""
    path = Path(os.path.abspath(project / Path(location).expanduser()))
    return str(path.relative_to(here)) if path.is_relative_to(here) and path != here else str(path)


#: The summary lines of a run's end (``fusemycell.hooks.summary``) that ``fusemycell predict`` shows; the
#: first two hold a path.
_PREDICT_SUMMARY = ("predictions", "inference report", "MLflow run")


def predict_summary(printed: str, project: Path, here: Path) -> str:
    """What a ``fusemycell predict`` run printed (``printed``: the memory table, then the run's summary),
    for a user in ``here``: the summary's predictions, report and MLflow run, every path relative to
    ``here`` or absolute, the MLflow browser to start in ``project``; the memory table (in the MLflow
    run) left out. Anything else printed is kept as it was."""
    kept: list[str] = []
    for paragraph in re.split(r"\n\s*\n", printed.strip()):
        lines = paragraph.splitlines()
        if not lines or lines[0].startswith("memory peaks"):
            continue
        if lines[0].strip() != "fusemycell run finished:":
            kept.append(paragraph)
            continue
        summary = ["fusemycell predict finished:"]
        for line in lines[1:]:
            label, _, value = line.strip().partition(":")
            value = value.strip()
            if label not in _PREDICT_SUMMARY:
                continue
            if label != "MLflow run" and not value.startswith("not exported"):
                value = _for_the_user(value, project, here)
            value = value.replace(
                "(browse: kedro mlflow ui)", f"(browse: cd {shlex.quote(str(project))} && kedro mlflow ui)"
            )
            summary.append(f"  {label + ':':<18}{value}")
        kept.append("\n".join(summary))
    return "\n\n".join(kept)


#: Loggers ``fusemycell predict`` shows from WARNING only: a line per written file (the summary names them).
PREDICT_QUIET_LOGGERS = ("fusemycell.datasets.tiff_folder_dataset",)


def _is_uri(value: str) -> bool:
    return "://" in value or value.startswith(("runs:/", "models:/", "mlflow-artifacts:"))


def _check_arguments(input_path: Path, output: Path, model: Path | None) -> None:
    """INPUT, OUTPUT and --model, checked before Kedro starts (the run checks them again, and the raw folder)."""
    if not input_path.exists():
        what = "a link to nothing" if input_path.is_symlink() else "no such file or folder"
        raise click.ClickException(f"INPUT {input_path}: {what}")
    if input_path.is_file() and input_path.suffix.lower() not in TIFF_SUFFIXES:
        raise click.ClickException(f"INPUT {not_a_volume(input_path)}")
    if model is not None and not model.is_file():
        what = "a folder, not a model file" if model.is_dir() else "no such file"
        raise click.ClickException(f"--model {model}: {what}")
    check_output_folder(input_path, output, None)  # a UserError, printed in this command's words


EXAMPLES = """\b
Examples:
  fusemycell predict /data/stack.tif /data/pred
      writes /data/pred/stack.tif (the folder is made; it may be next to the input)
  fusemycell predict /data/stack.tif /data/stack_fused.tif
      writes exactly /data/stack_fused.tif (one input file only)
  fusemycell predict /data/views/ /data/pred --model runs:/<run id>/model/fusemycell_unet.pt
      every single view of the folder, with a model tracked in MLflow
  fusemycell predict /data/views/ /data/pred --backend onnx --overwrite
      ONNX Runtime; replaces TIFFs in /data/pred that fusemycell did not write

\b
An input unlike the training data gets one warning line saying which property is outside
the training range; --outside-training base writes the blurred input instead, refuse skips it.
Run it in the project folder, or anywhere with --model a model file inside the project.
Errors you can fix print in a few lines; FUSEMYCELL_TRACEBACK=1 shows all."""


@cli.command(name="predict", cls=_PredictCommand, epilog=EXAMPLES)
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.argument("output", metavar="OUTPUT", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_uri",
    default=None,
    help="Model file, MLflow URI or fsspec URI such as s3://... (default: the project's "
    "data/06_models/fusemycell_unet.pt).",
)
@click.option("--env", "-e", default="mac", show_default=True, help="Kedro environment (mac, cloud, ...).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default=None, help="Inference backend.")
@click.option("--overwrite", is_flag=True, help="Replace TIFFs in OUTPUT that fusemycell did not write.")
@click.option(
    "--outside-training",
    type=click.Choice(["warn", "base", "refuse"]),
    default=None,
    help="An input unlike the model's training data (voxel size, shape, intensities, noise): warn (predict it "
    "and say why), base (write the blurred input instead) or refuse (skip it). Default: warn.",
)
def predict(
    input_path: Path,
    output: Path,
    *,
    model_uri: str | None,
    env: str,
    backend: str | None,
    overwrite: bool,
    outside_training: str | None,
) -> None:
    """Predict the fused volume of INPUT (one TIFF, or a folder of them) into OUTPUT.

    OUTPUT is a folder (made if needed; predictions keep their input's name) or, for one input file,
    a .tif/.tiff file name. Runs the inference pipeline through a Kedro session (same catalog, hooks
    and MLflow tracking as 'kedro run --pipelines inference'), for people who do not use Kedro.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    # absolute, but a linked file keeps its own name (its output is named after it)
    input_path, output = Path(os.path.abspath(input_path)), Path(os.path.abspath(output))
    model = Path(os.path.abspath(Path(model_uri).expanduser())) if model_uri and not _is_uri(model_uri) else None
    _check_arguments(input_path, output, model)
    here = Path.cwd()
    project = find_project(here, model.parent if model else None)
    if project is None:
        raise ProjectNotFound(no_project_message(here, model))
    inference: dict[str, Any] = {"input_dir": str(input_path), "output_dir": str(output)}
    if model_uri:
        inference["model_uri"] = str(model) if model else model_uri
    if backend:
        inference["backend"] = backend
    if overwrite:
        inference["overwrite"] = True
    if outside_training:
        inference["outside_training"] = outside_training
    os.chdir(project)  # as 'kedro run': what the configuration places relative to the run (mlflow.db) is in the project
    printed = io.StringIO()  # the run's memory table and summary, said again below in the user's folder
    try:
        bootstrap_project(project)  # (re)configures logging: before the command's own
        with (
            CommandLogging(quiet=PREDICT_QUIET_LOGGERS, names=PREDICT_NAMES),
            contextlib.redirect_stdout(printed),
            KedroSession.create(project_path=project, env=env, runtime_params={"inference": inference}) as session,
        ):
            session.run(pipeline_names=["inference"])  # the run removes the folders it made, if it wrote nothing
    finally:
        os.chdir(here)
    click.echo("\n" + predict_summary(printed.getvalue(), project, here))
