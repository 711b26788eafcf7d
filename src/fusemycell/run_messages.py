"""What a run says: one line per log record off a terminal, other libraries' known notices silenced where
they start, and MLflow run names.

On a terminal a run logs through Kedro's Rich handler (``conf/logging.yml``). When the output goes to a
file or a pipe, Rich would wrap records at 80 columns, breaking paths mid-word so that they cannot be
copied: :func:`one_line_off_terminal` puts a :class:`OneLineHandler` in its place.

A main job printed 282 lines, most of them notices a user can do nothing about (MLflow's type
hints and CloudPickle notes about kedro-mlflow's wrapper, PyTorch's ONNX constant folding, MLflow's
"Downloading artifacts" bars that are local copies). Kedro's own per-dataset lines are moved below
INFO in ``conf/logging.yml``; the notices of other libraries are silenced here, once, by
:func:`silence_known_notices` (``settings.py`` calls it).

kedro-mlflow names a run after its pipelines, so the main job was ``__default__``;
:class:`RunNameHooks` names it after what ran and where: ``simulation+preprocessing+patching+
training+evaluation (env mac)``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterable
from typing import Any

from kedro.framework.hooks import hook_impl

#: Warnings of other libraries, by message (a regular expression matched from the message's start).
KNOWN_WARNINGS = (
    # MLflow, about kedro-mlflow's pyfunc wrapper; MLflow colours the message, hence the leading .*
    r".*Add type hints to the `predict` method",
    # PyTorch's ONNX exporter, about the pads of the network's boundary (harmless: the graph is checked)
    r".*Constant folding - Only steps=1 can be constant folded",
    r"register_new_resolver\(\) is deprecated",  # OmegaConf, called by Kedro and kedro-mlflow
)

#: Log records of other libraries, by logger and a part of their message.
KNOWN_LOG_RECORDS = (
    # MLflow forces its type-hint notice through (``simplefilter("once")`` around it), so the warnings
    # filter above cannot stop it; Kedro routes warnings to the ``py.warnings`` logger, which can
    ("py.warnings", "Add type hints to the `predict` method"),
    # MLflow on every pyfunc model: kedro-mlflow's wrapper is a Python object, pickled by design
    ("mlflow.pyfunc", "Passing a Python object as `python_model` causes it to be serialized using CloudPickle"),
    # kedro-viz on every run of some pipelines (--pipelines, fusemycell predict): its own run log is off then
    ("kedro_viz.integrations.kedro.run_hooks", "Workflow tracking is disabled"),
    # MLflow the first time a project's mlflow.db is used (its own handler, before Kedro's logging applies)
    ("mlflow.store.db.utils", "Creating initial MLflow database tables"),
    ("mlflow.store.db.utils", "Updating database tables"),
)


#: How Kedro's own errors about a command line begin: a pipeline or node it names does not exist.
KEDRO_USAGE_ERRORS = ("Failed to find the pipeline named", "Pipeline does not contain")
_REGISTER_SENTENCE = " It needs to be generated and returned by the 'register_pipelines' function."
_SUGGESTION = "Did you mean one of these instead?"


def kedro_usage_error(error: BaseException) -> str | None:
    """Kedro's own error about the command line (a misspelt pipeline or node) on one line; None for others.

    ``Failed to find the pipeline named 'trainng'. Did you mean: training?`` instead of Kedro's
    paragraph after a 100-line traceback.
    """
    message = str(error)
    if not isinstance(error, ValueError) or not message.startswith(KEDRO_USAGE_ERRORS):
        return None
    first, _, suggestions = message.replace("\n", " ").replace(_REGISTER_SENTENCE, "").partition(_SUGGESTION)
    names = suggestions.split()
    text = first.strip() + (f" Did you mean: {', '.join(names)}?" if names else "")
    if message.startswith(KEDRO_USAGE_ERRORS[0]):
        text += " ('kedro registry list' names them all.)"
    return text


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined by `` | `` (a record's list of problems stays readable)."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


class OneLineHandler(logging.StreamHandler):
    """One plain line per record, ``12:03:04 INFO    message``: never wrapped, whatever the width.

    A record with an exception gets its last line (``ValueError: ...``) appended: the command prints
    the error itself, and ``FUSEMYCELL_TRACEBACK=1`` the whole traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f" ({type(error).__name__}: {error})"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {record.levelname:<7} {one_line(message)}"


def one_line_off_terminal(logger: logging.Logger | None = None) -> int:
    r"""Replace ``logger``'s (default: the root's) Rich handlers that do not write to a terminal by
    :class:`OneLineHandler`\ s on the same stream, with the same level and filters; idempotent.

    ``conf/logging.yml`` may name only ``logging`` and ``kedro.logging`` classes (Kedro's allow-list),
    so the choice is made here, once the configuration is applied. Returns how many were replaced.
    """
    from rich.logging import RichHandler

    target = logger or logging.getLogger()
    replaced = 0
    for handler in list(target.handlers):
        if not isinstance(handler, RichHandler) or handler.console.is_terminal:
            continue
        plain = OneLineHandler(handler.console.file)
        plain.setLevel(handler.level)
        for log_filter in handler.filters:
            plain.addFilter(log_filter)
        target.removeHandler(handler)
        target.addHandler(plain)
        replaced += 1
    return replaced


class _DropMessages(logging.Filter):
    def __init__(self, parts: Iterable[str]):
        super().__init__()
        self.parts = tuple(parts)

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(part in message for part in self.parts)


def silence_known_notices() -> None:
    """Silence the known third-party notices; idempotent."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    by_logger: dict[str, list[str]] = {}
    for name, part in KNOWN_LOG_RECORDS:
        by_logger.setdefault(name, []).append(part)
    for name, parts in by_logger.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in target.filters):
            target.addFilter(_DropMessages(parts))
    one_line_off_terminal()
    # MLflow's tqdm bars when it copies artifacts between local folders (and tqdm's "IProgress not
    # found" in a notebook without ipywidgets); a user who wants them sets the variable to true
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def run_name(pipeline_names: Iterable[str] | None, env: str | None) -> str:
    """``training (env mac)``; the main job spells out its pipelines instead of ``__default__``."""
    from fusemycell.pipeline_registry import DEFAULT_CHAIN

    names: list[str] = []
    for name in pipeline_names or ["__default__"]:
        names.extend(DEFAULT_CHAIN if name == "__default__" else [name])
    return f"{'+'.join(names)} (env {env or 'local'})"


class RunNameHooks:
    """Renames the MLflow run kedro-mlflow opened (it runs first: this hook is ``trylast``)."""

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        from fusemycell.io.pairs import forget_reported_files

        forget_reported_files()  # "N file(s) ignored" is said once per run
        try:
            import mlflow

            if mlflow.active_run() is None:
                return
            names = run_params.get("pipeline_names") or run_params.get("pipeline_name")
            if isinstance(names, str):
                names = [names]
            mlflow.set_tag("mlflow.runName", run_name(names, run_params.get("env")))
        except Exception as exc:  # noqa: BLE001 - a run name never stops a run
            logging.getLogger(__name__).warning("could not name the MLflow run: %s", exc)
