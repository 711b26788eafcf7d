"""The project's commands: ``kedro run`` with errors a person can read, and ``fusemycell predict``.

Kedro picks up the ``cli`` group of this module: its ``run`` replaces Kedro's own (same options)
and ``predict`` is added next to it. A problem the user can fix (a misspelt parameter, a folder
that would be overwritten, a missing model, a bad input file) prints the project's message and
hint in a few lines and exits 1; set ``FUSEMYCELL_TRACEBACK=1`` for the full traceback. An
unexpected error (a bug) always shows its traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.io.core import DatasetError

import fusemycell

#: Set to 1 to see the whole traceback of every error.
TRACEBACK_VARIABLE = "FUSEMYCELL_TRACEBACK"
_PACKAGE = Path(fusemycell.__file__).resolve().parent


def _raised_by_project(error: BaseException) -> bool:
    """True when fusemycell's own code raised ``error`` on purpose (its message is meant for the user)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)


def is_user_error(error: BaseException) -> bool:
    """A problem of the inputs, parameters or folders, explained by its message (not a bug).

    A ``DatasetError`` raised by fusemycell's datasets is one; one made by Kedro's wrapper around
    any exception of a load or save is judged by that exception (an ``AttributeError`` is a bug).
    """
    if isinstance(error, DatasetError) and not _raised_by_project(error) and error.__cause__ is not None:
        return is_user_error(error.__cause__)
    if isinstance(error, DatasetError):
        return True
    return isinstance(error, (ValueError, RuntimeError, OSError, KeyError)) and _raised_by_project(error)


def report_error(error: BaseException) -> None:
    """Print ``error`` as the project's message (a traceback on request), then exit 1."""
    if os.environ.get(TRACEBACK_VARIABLE) == "1" or not is_user_error(error):
        raise error
    click.secho(f"\nError: {error}", fg="red", err=True)
    click.echo(f"(full traceback: {TRACEBACK_VARIABLE}=1 kedro run ...)", err=True)
    sys.exit(1)


class _FriendlyCommand(click.Command):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs
            report_error(error)


@click.group(name="fusemycell")
def cli() -> None:
    """fusemycell: predict the fused light-sheet volume from a single view."""


run = _FriendlyCommand(
    name="run",
    params=list(kedro_run.params),
    callback=kedro_run.callback,
    help=(kedro_run.help or "") + "\n\nErrors you can fix print in a few lines; FUSEMYCELL_TRACEBACK=1 shows all.",
    short_help="Run the pipelines (the main job by default).",
)
cli.add_command(run)


@cli.command(name="predict", cls=_FriendlyCommand)
@click.argument("input_path", type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_uri", default=None, help="Model file or MLflow URI (default: data/06_models).")
@click.option("--env", "-e", default="mac", show_default=True, help="Kedro environment (mac, cloud, ...).")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default=None, help="Inference backend.")
@click.option("--overwrite", is_flag=True, help="Replace TIFFs in OUTPUT_DIR that fusemycell did not write.")
def predict(
    input_path: Path, output_dir: Path, *, model_uri: str | None, env: str, backend: str | None, overwrite: bool
) -> None:
    """Predict the fused volume of INPUT_PATH (one TIFF, or a folder of them) into OUTPUT_DIR.

    Runs the inference pipeline through a Kedro session (same catalog, hooks and MLflow
    tracking as 'kedro run --pipelines inference'), for people who do not use Kedro.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    # absolute, but a linked file keeps its own name (its output is named after it)
    inference: dict[str, Any] = {"input_dir": os.path.abspath(input_path), "output_dir": os.path.abspath(output_dir)}
    if model_uri:
        inference["model_uri"] = model_uri
    if backend:
        inference["backend"] = backend
    if overwrite:
        inference["overwrite"] = True
    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params={"inference": inference}) as session:
        session.run(pipeline_names=["inference"])
