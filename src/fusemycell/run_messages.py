"""What a run says: one line per log record off a terminal, other libraries' known notices silenced where
they start, and MLflow run names.

``conf/logging.yml`` names Kedro's Rich handler (its allow-list admits no other class; it also installs
Rich's tracebacks), but Rich wraps every record at the width of its console (80 columns off a
terminal, and on one narrower than time, level, message and file:line together), breaking paths
mid-name so that they cannot be copied: :func:`one_line_records` puts a :class:`OneLineHandler` in
its place, on a terminal too.

``fusemycell predict`` is for people who do not use Kedro: while it runs, :class:`CommandLogging`
shows fusemycell's own records only, Kedro's, MLflow's and PyTorch's loggers being set to ERROR.

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

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.errors import in_words

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
    # Kedro when it is imported outside a project (``fusemycell predict`` elsewhere), if this runs first
    ("kedro.framework.project", "as logging configuration"),
)


#: How Kedro's own errors about a command line begin: a pipeline or node it names does not exist.
KEDRO_USAGE_ERRORS = ("Failed to find the pipeline named", "Pipeline does not contain")
_REGISTER_SENTENCE = " It needs to be generated and returned by the 'register_pipelines' function."
_SUGGESTION = "Did you mean one of these instead?"


def kedro_usage_error(error: BaseException) -> str | None:
    """Kedro's own error about the command line (a misspelt pipeline or node) on one line; None for others.

    This reads Kedro's message, the one error that is not raised as a :class:`~fusemycell.errors.UserError`:
    Kedro raises a plain ``ValueError`` for a ``--pipelines`` or ``--nodes`` name it does not know. Only its two
    fixed openings are matched (no project message is); if Kedro rewords them, the error shows its traceback
    instead of one line, and ``tests/test_cli.py`` (a misspelt pipeline) fails.

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
    the error itself, and ``FUSEMYCELL_TRACEBACK=1`` the whole traceback. On a terminal the level of
    a warning or an error is coloured.

    ``names``: how the command that prints the records names the settings (``fusemycell predict``'s
    OUTPUT, ``--model``, ...); a record's message or argument that is a :class:`~fusemycell.errors.UserMessage`
    or a :class:`~fusemycell.errors.UserError` is worded with them. Any other record is printed as it is.
    """

    COLOURS = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}

    def __init__(self, stream: Any = None, names: Mapping[str, str] | None = None) -> None:
        super().__init__(stream)
        self.names = dict(names or {})

    def _message(self, record: logging.LogRecord) -> str:
        if not self.names:
            return record.getMessage()
        msg, args = in_words(record.msg, self.names), record.args
        if isinstance(args, tuple):
            args = tuple(in_words(arg, self.names) for arg in args)
        elif isinstance(args, Mapping):
            args = {key: in_words(value, self.names) for key, value in args.items()}
        return str(msg) % args if args else str(msg)

    def format(self, record: logging.LogRecord) -> str:
        message = self._message(record)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f" ({type(error).__name__}: {in_words(error, self.names)})"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = f"{record.levelname:<7}"
        colour = self.COLOURS.get(record.levelname)
        if colour and _is_terminal(self.stream):
            import click

            level = click.style(level, fg=colour)
        return f"{stamp} {level} {one_line(message)}"


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def one_line_records(logger: logging.Logger | None = None) -> int:
    r"""Replace ``logger``'s (default: the root's) Rich handlers by :class:`OneLineHandler`\ s on the same
    stream, with the same level and filters; idempotent.

    ``conf/logging.yml`` may name only ``logging`` and ``kedro.logging`` classes (Kedro's allow-list),
    so the choice is made here, once the configuration is applied. Returns how many were replaced.
    """
    from rich.logging import RichHandler

    target = logger or logging.getLogger()
    replaced = 0
    for handler in list(target.handlers):
        if not isinstance(handler, RichHandler):
            continue
        plain = OneLineHandler(handler.console.file)
        plain.setLevel(handler.level)
        for log_filter in handler.filters:
            plain.addFilter(log_filter)
        target.removeHandler(handler)
        target.addHandler(plain)
        replaced += 1
    return replaced


#: The libraries a command runs on whose loggers :class:`CommandLogging` sets to ERROR (their records
#: never reach its output in any case; the level stops them at their source, their own handlers too).
THIRD_PARTY_LOGGERS = (
    "kedro",
    "kedro_mlflow",
    "kedro_viz",
    "kedro_datasets",
    "mlflow",
    "alembic",
    "torch",
    "onnxruntime",
    "onnxscript",
    "py.warnings",
    "urllib3",
    "matplotlib",
    "PIL",
    "numcodecs",
    "zarr",
    "fsspec",
    "git",
)
#: Libraries that configure their loggers when first imported (a level set before would be undone).
_CONFIGURE_ON_IMPORT = ("mlflow", "kedro_mlflow")


class _OwnRecords(logging.Filter):
    """Passes the records of one package's loggers (``fusemycell``, ``fusemycell.io``, ...) only."""

    def __init__(self, package: str) -> None:
        super().__init__()
        self.package = package

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == self.package or record.name.startswith(self.package + ".")


class CommandLogging:
    """What a command for people who do not use Kedro logs while it runs (a context manager).

    Inside the block the root logger has one handler, a :class:`OneLineHandler` on ``stream``
    (default: standard error) that passes ``package``'s records only, from INFO (the loggers in
    ``quiet`` from WARNING); the loggers of :data:`THIRD_PARTY_LOGGERS` are set to ERROR. Everything
    is put back as it was when the block ends. ``names``: the command's words for the settings
    (:class:`OneLineHandler`).
    """

    def __init__(
        self,
        package: str = "fusemycell",
        *,
        quiet: Iterable[str] = (),
        stream: Any = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self.package, self.quiet, self.stream, self.names = package, tuple(quiet), stream, names
        self.handler: OneLineHandler | None = None
        self._saved_handlers: list[logging.Handler] = []
        self._saved_levels: dict[str, int] = {}

    def _set_level(self, name: str, level: int) -> None:
        logger = logging.getLogger(name)
        self._saved_levels.setdefault(name, logger.level)
        logger.setLevel(level)

    def __enter__(self) -> CommandLogging:
        import importlib

        for name in _CONFIGURE_ON_IMPORT:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        root = logging.getLogger()
        self._saved_handlers = list(root.handlers)
        for handler in self._saved_handlers:
            root.removeHandler(handler)
        self.handler = OneLineHandler(self.stream if self.stream is not None else sys.stderr, self.names)
        self.handler.addFilter(_OwnRecords(self.package))
        root.addHandler(self.handler)
        for name in THIRD_PARTY_LOGGERS:
            self._set_level(name, logging.ERROR)
        self._set_level(self.package, logging.INFO)
        for name in self.quiet:
            self._set_level(name, logging.WARNING)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        if self.handler is not None:
            root.removeHandler(self.handler)
        for handler in self._saved_handlers:
            root.addHandler(handler)
        for name, level in self._saved_levels.items():
            logging.getLogger(name).setLevel(level)
        self._saved_handlers, self._saved_levels, self.handler = [], {}, None


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
    one_line_records()
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
