"""One inference run into one output folder: its lock, its report, its ranks, and how it ends.

An :class:`InferenceRun` is what ``fusemycell predict``, ``kedro run --pipelines inference`` (through the
project hook) and a dataset saved alone have in common. It owns:

- the **folder's lock** (:mod:`fusemycell.io.folder_lock`): taken by :meth:`InferenceRun.start`, given
  back by :meth:`InferenceRun.finish`, only by the run that took it. A run refused because another one
  holds the folder creates nothing there and removes nothing: it leaves a note next to the folder's
  report, which the holder's report lists under ``refused_runs``. A run that fails removes only the
  folders it created itself, and only when they are empty;
- the **report's life cycle** (:mod:`fusemycell.inference.report`): ``running`` from the start, one
  entry per file as it is written, then ``complete``, ``failed``, ``nothing to write`` or
  ``interrupted``. A report left ``running`` by a killed run is kept in the next run's report under
  ``previous_run``, with the files that run really finished (those on disk, written since it started);
- **how it ends**: Ctrl-C (SIGINT) and SIGTERM raise :class:`Interrupted` in the main thread (a
  :class:`KeyboardInterrupt` that knows its signal and its exit status, 130 or 143); whatever way the
  process ends short of SIGKILL, the report then says ``interrupted`` and the lock is given back;
- the **ranks** of a launcher (:mod:`fusemycell.ranks`): rank 0 takes the folder and writes the one
  report, every rank writes its :meth:`share` of the files, and rank 0 waits for the others only while
  they are alive (a heartbeat): a rank that died ends the run within minutes, naming it.

The dataset that writes the volumes asks :func:`active_run` for the run of its folder (or makes one for
its save alone) and tells it what became of each file (:meth:`InferenceRun.record`). No Kedro import.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from fusemycell.errors import Setting, UserError
from fusemycell.inference.folders import is_file_output
from fusemycell.inference.report import (
    FileOutcome,
    InferenceReport,
    interrupted,
    read_report,
    refusal_notes,
    report_path,
    write_refusal_note,
)
from fusemycell.io import folder_lock
from fusemycell.io.atomic import remove_leftovers
from fusemycell.ranks import RankError, Ranks, RankStore

logger = logging.getLogger(__name__)

__all__ = ["InferenceRun", "Interrupted", "ReportError", "RunStartError", "active_run", "files_on_disk"]

#: The setting that chooses the output folder, as messages name it.
OUTPUT_SETTING = Setting("inference.output_dir", "FOLDER")
#: The runs this process has started and not finished, by output folder.
_ACTIVE: dict[Path, InferenceRun] = {}
#: Runs into each folder made by this process: the ranks of a run make them in the same order.
_STARTS: dict[str, int] = {}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C: SIGINT; ``kill``, a scheduler: SIGTERM).

    A :class:`KeyboardInterrupt`, so that everything that lets Ctrl-C through lets it through too;
    :attr:`exit_status` is what a shell expects of a process ended by that signal (130, 143).
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_status(self) -> int:
        """``128 + signal``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class RunStartError(UserError):
    """The run could not take its output folder (a folder it cannot write, ranks that cannot reach each other)."""


class ReportError(UserError):
    """The run's report could not be written."""


def active_run(folder: str | os.PathLike) -> InferenceRun | None:
    """The run of this process that holds ``folder`` (None: none, a save then makes its own)."""
    return _ACTIVE.get(Path(folder).expanduser().resolve())


def files_on_disk(folder: Path, since: float, only: str | None = None) -> list[str]:
    """Names in ``folder`` (hidden ones aside) changed at or after ``since``: what a run finished writing.

    Every writer of the project renames a complete file into place (:mod:`fusemycell.io.atomic`), so a
    name that is there is a whole file. ``only``: the one name an output naming one file may have.
    """
    try:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".") and (only is None or e.name == only)]
    except OSError:
        return []
    found = []
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime >= since - 1.0:  # mtimes may be rounded to the second
                found.append(entry.name)
    return sorted(found)


def _started_at(report: dict[str, Any]) -> float | None:
    """When the run of a report started (seconds since the epoch)."""
    if isinstance(report.get("started_unix"), int | float):
        return float(report["started_unix"])
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        return time.mktime(time.strptime(str(report.get("started")), "%Y-%m-%d %H:%M:%S"))
    return None


class InferenceRun:
    """One run into ``output`` (a folder, or one ``.tif`` file in its folder); see the module docstring.

    ``report_dir``: where the report goes (None: no report); ``ranks``: this process among the launcher's
    (default: from ``RANK``/``WORLD_SIZE``).
    """

    def __init__(
        self, output: str | os.PathLike, *, report_dir: str | os.PathLike | None = None, ranks: Ranks | None = None
    ) -> None:
        self.output = Path(output).expanduser()
        self.folder = self.output.parent if is_file_output(self.output) else self.output
        self.report_file = report_path(report_dir, self.output) if report_dir else None
        self.ranks = ranks if ranks is not None else Ranks.from_environment()
        self.report = InferenceReport(str(self.output.resolve()))
        self.outcomes: list[FileOutcome] = []
        """This rank's files: what became of each (every rank's, on rank 0 after :meth:`end_save`)."""
        self.signal: int | None = None
        self._created: list[Path] = []
        self._store: RankStore | None = None
        self._published = False
        self._active = False
        self._previous_handlers: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"InferenceRun({str(self.output)!r}, {self.report.status}, {self.ranks})"

    @property
    def status(self) -> str:
        """The report's status: ``running`` until the run ends."""
        return self.report.status

    @property
    def active(self) -> bool:
        """True from :meth:`start` to :meth:`finish`."""
        return self._active

    # ------------------------------------------------------------------ start
    def start(self) -> InferenceRun:
        """Take the folder (rank 0; the other ranks wait for it) and start the report; returns ``self``.

        Raises
        ------
        folder_lock.FolderBusyError
            Another live run holds the folder: nothing was created or changed, a note says this run was refused.
        RunStartError
            The folder cannot be written (the report says so), or the ranks cannot reach each other.
        """
        if self.ranks.distributed:
            self._connect()
        try:
            if self.ranks.lead:
                self._take()
        except BaseException as error:
            self._tell_ranks(error)
            if self._store is not None:
                self._store.stop_heartbeat()
            raise
        self._tell_ranks(None)
        self._active = True
        _ACTIVE[self.folder.resolve()] = self
        atexit.register(self._at_exit)
        self._catch_signals()
        return self

    def _take(self) -> None:
        """Rank 0: lock the folder, clear what killed writes left, write the report ``running``."""
        created: list[Path] = []
        try:
            created = folder_lock.make_folders(self.folder)
            folder_lock.acquire(self.folder, OUTPUT_SETTING)
        except folder_lock.FolderBusyError as busy:
            self._note_refusal(busy)
            raise
        except OSError as exc:
            folder_lock.remove_empty(created)
            problem = RunStartError(
                "{folder}: cannot write here ({problem}). Choose another folder: {output}.",
                folder=self.folder,
                problem=exc.strerror or exc,
                output=OUTPUT_SETTING,
            )
            self._write_quietly(self.report.finish("failed", str(problem)))
            raise problem from exc
        try:
            remove_leftovers(self.folder)  # temporary files of killed writes: no other run writes here now
            self._keep_previous_run()
            self.report.ranks = self.ranks.world_size if self.ranks.distributed else None
            self._write()
        except BaseException:  # an unwritable report folder: the folder is given back as it was found
            folder_lock.release(self.folder)
            folder_lock.remove_empty(created)
            raise
        self._created = created

    def _keep_previous_run(self) -> None:
        """A report still ``running`` (its run is gone: we hold the folder) is kept, with what that run wrote."""
        previous = interrupted(read_report(self.report_file)) if self.report_file is not None else None
        if previous is None:
            return
        since = _started_at(previous)
        on_disk = files_on_disk(self.folder, since, self._only_name()) if since is not None else []
        previous["written"] = sorted({*previous["written"], *on_disk})
        logger.warning(
            "%s: the previous run into this folder (started %s: %s) was killed before it finished; the files it "
            "had written completely: %s (kept in this run's report)",
            self.output,
            previous["started"],
            (previous.get("process") or {}).get("command", "?"),
            ", ".join(previous["written"]) or "none",
        )
        self.report.previous_run = previous

    def _only_name(self) -> str | None:
        return self.output.name if self.folder != self.output else None

    def refuse(self, error: BaseException) -> None:
        """The run was refused before it started (an unsafe output folder, invalid parameters): the report says so.

        Nothing is created in the output folder. While another live run holds the folder, its report
        is left alone and this refusal is a note that its report will list.
        """
        if not self.ranks.lead or self.report_file is None:
            return
        owner = folder_lock.read_owner(self.folder) if self.folder.is_dir() else None
        if owner is not None and not folder_lock.holds(self.folder) and folder_lock.owner_alive(owner):
            self._note_refusal(error)
            return
        self._write_quietly(self.report.finish("refused", str(error)))

    def _note_refusal(self, error: BaseException) -> None:
        if self.report_file is None or not self.ranks.lead:
            return
        try:
            write_refusal_note(self.report_file, self.report.process, str(error))
        except OSError as exc:
            logger.error("could not note this run's refusal next to %s: %s", self.report_file, exc)

    # ------------------------------------------------------------------ saving
    def share(self, names: list[str]) -> list[str]:
        """The names this rank writes (all of them in a run of one process), sorted."""
        return self.ranks.share(names)

    def set_plan(self, plan: dict[str, Any]) -> None:
        """What the run read and used (input folder, model, backend, skipped files), written with the report."""
        self.report.plan = dict(plan)

    def record(self, outcome: FileOutcome) -> None:
        """What became of one file; the report (still ``running``) lists it at once."""
        if self.ranks.distributed:
            outcome.rank = self.ranks.rank
        self.outcomes.append(outcome)
        if not self.ranks.distributed:
            self.report.files = list(self.outcomes)
            self._write()

    def end_save(self) -> list[FileOutcome]:
        """Every file was tried: the report says ``complete`` or ``failed``; returns the files that failed.

        In a run of several ranks each rank publishes its files; rank 0 waits for every rank (while
        they are alive), writes the one report and returns every rank's failures.
        """
        records = self._exchange(None)
        stopped: list[str] = []
        if records is not None:
            self.outcomes, stopped = _merged(records)
        failures = [f for f in self.outcomes if f.status == "failed"]
        if self.ranks.lead:
            self.report.files = list(self.outcomes)
            self.report.reason = "; ".join(stopped) or None
            self._write(self.report.finish("failed" if failures or stopped else "complete"))
        return failures

    # ------------------------------------------------------------------ end
    def finish(self, error: BaseException | None = None) -> None:
        """End the run: a report still ``running`` says why (``failed``, ``interrupted``, ``nothing to write``),
        the lock is given back, and after a failure the folders this run created are removed if empty."""
        if not self._active:
            return
        try:
            self._close_report(error)
        finally:
            self._active = False
            _ACTIVE.pop(self.folder.resolve(), None)
            atexit.unregister(self._at_exit)
            self._restore_signals()
            if self._store is not None:
                self._store.stop_heartbeat()
            if self.ranks.lead:
                folder_lock.release(self.folder)
                if error is not None:
                    folder_lock.remove_empty(self._created)

    def _close_report(self, error: BaseException | None) -> None:
        records = None
        if not self._published and self.ranks.distributed:
            stopping = isinstance(error, KeyboardInterrupt)  # a stopped run waits for no other rank
            with contextlib.suppress(RankError, RunStartError):  # a rank that cannot reach the others said why
                records = self._exchange(error, wait=not stopping)
        if self.report.status != "running" or not self.ranks.lead:
            return
        stopped: list[str] = []
        if records is not None:
            self.outcomes, stopped = _merged(records)
        self.report.files = list(self.outcomes)
        if isinstance(error, KeyboardInterrupt):
            self._interrupted(error)
            return
        when = "its last" if self.outcomes else "any"
        reasons = "; ".join(stopped) or (f"the run failed before {when} prediction: {error}" if error else None)
        status = "failed" if reasons else ("complete" if self.outcomes else "nothing to write")
        self._write(self.report.finish(status, reasons))

    def _interrupted(self, error: KeyboardInterrupt) -> None:
        """The report of a run stopped by a signal: what it finished, by its records and on disk."""
        written = {f.file for f in self.outcomes if f.status == "written"}
        on_disk = files_on_disk(self.folder, self.report.started, self._only_name())
        self.report.files += [FileOutcome(name, "written") for name in on_disk if name not in written]
        reason = str(error) if isinstance(error, Interrupted) else "stopped by Ctrl-C"
        self._write_quietly(self.report.finish("interrupted", reason))
        logger.warning("%s: %s; the report says what it had finished", self.output, reason)

    def _at_exit(self) -> None:
        """The process ends with the run unfinished (a signal, an error nobody caught, ``sys.exit``)."""
        if self.signal is not None:
            self.finish(Interrupted(self.signal))
        else:
            self.finish(RuntimeError("the process ended before the run finished"))

    # ------------------------------------------------------------------ signals
    def _catch_signals(self) -> None:
        """SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; a signal ignored stays ignored)."""
        if threading.current_thread() is not threading.main_thread() or any(r._previous_handlers for r in _runs()):
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN or previous is None:
                continue
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signal = signum
        raise Interrupted(signum)

    def _restore_signals(self) -> None:
        handlers, self._previous_handlers = self._previous_handlers, {}
        if threading.current_thread() is threading.main_thread():
            for signum, previous in handlers.items():
                signal.signal(signum, previous)

    # ------------------------------------------------------------------ ranks
    def _connect(self) -> None:
        key = hashlib.sha256(str(self.folder.resolve()).encode("utf-8")).hexdigest()[:16]
        _STARTS[key] = _STARTS.get(key, 0) + 1
        try:
            self._store = RankStore.connect(self.ranks, f"fusemycell/outputs/{key}/{_STARTS[key]}/")
        except RankError as exc:
            raise RunStartError("{folder}: {problem}", folder=self.folder, problem=exc) from exc
        self._store.start_heartbeat()

    def _tell_ranks(self, error: BaseException | None) -> None:
        """Rank 0 says whether it took the folder; the others wait for that and stop with its error."""
        if self._store is None:
            return
        if self.ranks.lead:
            with contextlib.suppress(RankError):
                self._store.publish("start", {"error": None if error is None else str(error)})
            return
        if error is not None:
            return
        try:
            problem = self._store.collect("start")["error"]
        except RankError as exc:
            self._store.stop_heartbeat()
            raise RunStartError("{folder}: {problem}", folder=self.folder, problem=exc) from exc
        if problem:
            self._store.stop_heartbeat()
            raise RunStartError(
                "{folder}: rank 0 could not start the run: {problem}", folder=self.folder, problem=problem
            )

    def _exchange(self, error: BaseException | None, wait: bool = True) -> list[dict[str, Any]] | None:
        """Publish this rank's files (or why it stopped); on rank 0 (``wait``), every rank's record (else None)."""
        if self._store is None:
            return None
        record = None
        if not self._published:
            self._published = True
            record = {
                "rank": self.ranks.rank,
                "files": [{"file": o.file, "status": o.status, "problem": o.problem} for o in self.outcomes],
                "error": None if error is None else str(error) or type(error).__name__,
            }
        try:
            if record is not None:
                self._store.publish(f"finished/{self.ranks.rank}", record)
            if not self.ranks.lead or not wait:
                return None
            return [self._store.collect_from(rank, f"finished/{rank}") for rank in range(self.ranks.world_size)]
        except RankError as exc:
            raise RunStartError("{folder}: {problem}", folder=self.folder, problem=exc) from exc

    # ------------------------------------------------------------------ the report file
    def _write(self, report: InferenceReport | None = None) -> None:
        report = report or self.report
        if self.report_file is None or not self.ranks.lead:
            return
        if report.status != "running":
            report.refused_runs = refusal_notes(self.report_file, consume=True) or report.refused_runs
        try:
            report.write(self.report_file)
        except OSError as exc:
            raise ReportError(
                "could not write the report {path}: {problem}", path=self.report_file, problem=exc
            ) from exc

    def _write_quietly(self, report: InferenceReport) -> None:
        """Write the report of a run that is stopping anyway: its own error is the one to show."""
        try:
            self._write(report)
        except ReportError as exc:
            logger.error("%s", exc)


def _runs() -> list[InferenceRun]:
    return list(_ACTIVE.values())


def _merged(records: list[dict[str, Any]]) -> tuple[list[FileOutcome], list[str]]:
    """Every rank's files, each with its rank (sorted by file name), and the errors that stopped a rank."""
    files = [
        FileOutcome(entry["file"], entry["status"], entry.get("problem"), record["rank"])
        for record in records
        for entry in record["files"]
    ]
    stopped = [f"rank {record['rank']}: {record['error']}" for record in records if record.get("error")]
    return sorted(files, key=lambda outcome: outcome.file), stopped
