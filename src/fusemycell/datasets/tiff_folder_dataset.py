"""``TiffFolderDataset``: a flat folder of TIFF volumes with any names (challenge inputs and predictions)."""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError
from kedro_datasets._typing import ImagePreview

from fusemycell import __version__
from fusemycell.datasets.folder_writer import LockedFolderWriter, missing_folders
from fusemycell.datasets.shared_run import SharedRun, merged_outcomes
from fusemycell.datasets.volume_sources import VolumeSource, close, list_tiffs
from fusemycell.inference.folders import is_file_output
from fusemycell.inference.report import FileOutcome, InferenceReport, interrupted, read_report, report_path
from fusemycell.io import folder_lock
from fusemycell.io.atomic import remove_leftovers
from fusemycell.io.formats import read_info
from fusemycell.io.metadata import PROVENANCE_KEY, PROVENANCE_PREFIX, prediction_mark
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError
from fusemycell.progress import track
from fusemycell.ranks import Ranks

logger = logging.getLogger(__name__)

#: The provenance mark this version writes (:data:`fusemycell.io.metadata.PROVENANCE_KEY`).
PROVENANCE_VALUE = f"{PROVENANCE_PREFIX} {__version__}"


def written_by_fusemycell(path: str | os.PathLike) -> bool:
    """True when ``path`` is a TIFF that carries fusemycell's provenance mark (reads the header only)."""
    try:
        return bool(prediction_mark(read_info(path).metadata))
    except (VolumeFormatError, OSError):
        return False


Predictions = Mapping[str, Volume | Callable[[], Volume]]


class TiffFolderDataset(LockedFolderWriter, AbstractDataset[Predictions, dict[str, VolumeSource]]):
    """``load``: ``{file name: VolumeSource}`` of the folder's ``*.tif``/``*.tiff``, or of one file: call one
    for its volume, read lazily. ``save``: ``{file name: Volume or callable}``, each written atomically.
    A ``path`` ending in ``.tif``/``.tiff`` (not an existing folder) saves one volume as exactly that file.

    What it writes are predictions: each file carries the metadata key ``fusemycell``
    (its provenance mark). An existing file without that mark is never replaced, unless
    ``overwrite`` is true: the save stops before writing anything, naming the file. One
    file that fails (unreadable input found while streaming, disk error) does not stop
    the others: they are all written, then the save fails naming every file that could
    not be written.

    With ``report_dir``, every run writes its report there, named after the output folder
    (:mod:`fusemycell.inference.report`): ``running`` from the start of the run, then what
    was written, what failed and why, and the plan's ``report`` entries (input folder,
    model, skipped files); a run refused or failed before its first prediction says so.

    The folder has one writer at a time (:mod:`fusemycell.io.folder_lock`): a second
    run fails at once naming the run that holds it, and leaves that run's report alone.
    A run that fails leaves no output folder it created and wrote nothing into.

    Under a launcher that starts several ranks (``RANK``/``WORLD_SIZE``, see :mod:`fusemycell.ranks`)
    the ranks share the run (:mod:`fusemycell.datasets.shared_run`): each writes its share of the files
    (:meth:`Ranks.share <fusemycell.ranks.Ranks.share>`), rank 0 holds the folder and writes one report
    that lists every file once, with the rank that wrote it.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        overwrite: bool = False,
        report_dir: str | os.PathLike | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A dataset over the local folder ``path``; its runs' reports go to ``report_dir`` (none: no report)."""
        self._path = Path(path)
        self._overwrite = bool(overwrite)
        self._report_dir = Path(report_dir) if report_dir else None
        self.metadata = metadata
        self._run: InferenceReport | None = None
        self.ranks = Ranks.from_environment()
        self._shared: SharedRun | None = None

    def _describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"path": str(self._path), "overwrite": self._overwrite}
        if self._report_dir:
            described["report_dir"] = str(self._report_dir)
        return described

    @property
    def path(self) -> Path:
        """The folder (or, for inputs, possibly one file)."""
        return self._path

    @property
    def folder(self) -> Path:
        """The folder written into: :attr:`path`, or the folder of the one file it names (``.tif``/``.tiff``)."""
        return self._path.parent if self._one_file else self._path

    @property
    def _one_file(self) -> bool:
        return is_file_output(self._path)

    def _lock_folder(self) -> Path:
        return self.folder

    def _target(self, name: str) -> Path:
        """Where the prediction ``name`` is written: in the folder under its name, or the one file named."""
        return self._path if self._one_file else self._path / name

    @property
    def report_file(self) -> Path | None:
        """Where the runs into this folder write their report (None without ``report_dir``)."""
        return report_path(self._report_dir, self._path) if self._report_dir else None

    def _files(self) -> dict[str, str]:
        """The TIFF files by name; folders named ``*.tif`` and dangling links are reported once."""
        files, problems = list_tiffs(self._path)
        if problems:
            logger.warning("%s: %d entries ignored: %s", self._path, len(problems), "; ".join(problems))
        return files

    def load(self) -> dict[str, VolumeSource]:
        """A loader per TIFF file, by name (no voxels read until one is called)."""
        return {name: VolumeSource(path) for name, path in self._files().items()}

    # ------------------------------------------------------------------ a run's lifetime
    def begin_run(self) -> None:
        """Called by the project hook before the first node: take the folder, and start this run's report.

        A folder another run holds fails here and its report is left to that run. A folder that
        cannot be written fails here too, and the report says so. A report left ``running`` by a
        killed run is named in the log and kept in the new report. In a run of several ranks, rank 0
        does this and the others wait for it.
        """
        if not self.ranks.distributed:
            self._take()
            return
        self._shared = SharedRun(self.ranks, self.folder)
        self._shared.start(self._take_for_all)

    def _take(self) -> None:
        try:
            super().begin_run()
        except DatasetError as exc:
            if not isinstance(exc.__cause__, folder_lock.FolderBusyError):
                self._report_quietly(self._new_report().finish("failed", str(exc)))
            raise
        self._run = self._new_report()
        self._write_report(self._run)

    def _take_for_all(self) -> None:
        """Rank 0: take the folder, clear what killed runs left (before any rank writes), start the report."""
        self._take()
        remove_leftovers(self.folder)
        assert self._run is not None
        self._run.ranks = self.ranks.world_size
        self._write_report(self._run)

    def end_run(self, error: BaseException | None = None) -> None:
        """Called by the project hook after the run: a run that failed before saving says so in its report."""
        shared, self._shared = self._shared, None
        if shared is not None:
            self._end_shared(shared, error)
            return
        run, self._run = self._run, None
        if run is not None and run.status == "running":
            reason = f"the run failed before any prediction: {error}" if error else None
            self._write_report(run.finish("failed" if error else "nothing to write", reason))
        super().end_run(error)

    def _end_shared(self, shared: SharedRun, error: BaseException | None) -> None:
        """A rank that stopped before saving tells rank 0, which waits for every rank before giving the folder back."""
        run, self._run = self._run, None
        try:
            records = shared.finish([], error) if not shared.published else None
            if records is not None and run is not None and run.status == "running":
                run.files, stopped = merged_outcomes(records)
                reasons = "; ".join(stopped) or (f"the run failed before any prediction: {error}" if error else None)
                self._write_report(run.finish("failed" if reasons else "nothing to write", reasons))
        finally:
            if self.ranks.lead:
                super().end_run(error)

    def refuse(self, error: BaseException) -> None:
        """The run was refused before it started (an unsafe output folder, invalid parameters): the report says so.

        Nothing is created in the output folder; a report that a live run into it is writing is left alone.
        """
        if not self.ranks.lead:
            return
        owner = folder_lock.read_owner(self.folder) if self.folder.is_dir() else None
        if owner is not None and not folder_lock.holds(self.folder) and folder_lock.owner_alive(owner):
            logger.info("%s: in use by another run, whose report stays as it is", self._path)
            return
        self._report_quietly(self._new_report().finish("refused", str(error)))

    def _report_quietly(self, report: InferenceReport) -> None:
        """Write the report of a run that is stopping anyway: its own error is the one to show."""
        try:
            self._write_report(report)
        except DatasetError as exc:
            logger.error("%s", exc)

    def _output_dir(self) -> str:
        return str(self._path.expanduser().resolve())

    def _new_report(self) -> InferenceReport:
        """This run's report; a report left ``running`` (no live run holds the folder) is named and kept."""
        report = InferenceReport(self._output_dir())
        previous = interrupted(read_report(self.report_file)) if self.report_file is not None else None
        if previous is not None:
            logger.warning(
                "%s: the previous run into this folder (started %s: %s) was killed before it finished, its report "
                "still said 'running'; the files it had written completely: %s (kept in this run's report)",
                self._path,
                previous["started"],
                (previous.get("process") or {}).get("command", "?"),
                ", ".join(previous["written"]) or "none",
            )
            report.previous_run = previous
        return report

    def _write_report(self, report: InferenceReport) -> None:
        if self.report_file is None or not self.ranks.lead:
            return
        try:
            report.write(self.report_file)
        except OSError as exc:
            raise DatasetError(f"could not write the report {self.report_file}: {exc}") from exc

    # ------------------------------------------------------------------ saving
    def save(self, data: Predictions) -> None:
        """Write every volume (this rank's share of them); then fail naming those that could not be written."""
        if self.ranks.distributed:
            self._save_shared(data)
            return
        self._one_file_only(data)
        created = missing_folders(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"{self.folder}: cannot create the output folder ({exc.strerror or exc})") from exc
        with self._writing(created):
            self._save_locked(data)

    def _one_file_only(self, data: Predictions) -> None:
        """An output naming one file takes one prediction (of one input file)."""
        if self._one_file and len(data) > 1:
            raise DatasetError(
                f"{self._path}: one output file for {len(data)} predictions ({', '.join(list(data)[:3])}"
                f"{', ...' if len(data) > 3 else ''}); nothing was written. Give a folder for the predictions of "
                "several inputs (--params inference.output_dir=FOLDER)"
            )

    def _refuse_foreign_files(self, names: list[str]) -> None:
        if self._overwrite:
            return
        targets = [self._target(n) for n in names]
        foreign = [t.name for t in targets if t.exists() and not written_by_fusemycell(t)]
        if foreign:
            raise DatasetError(
                f"{self.folder}: refusing to replace {len(foreign)} file(s) that fusemycell did not write "
                f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing was written. "
                "Choose an empty output folder (--params inference.output_dir=FOLDER), or set "
                "inference.overwrite: true to replace them"
            )

    def _save_locked(self, data: Predictions) -> None:
        plan = dict(getattr(data, "report", {}) or {})
        self._refuse_foreign_files(list(data))
        remove_leftovers(self.folder)  # temporary files of a previous, killed run (we hold the folder)
        report = self._run or InferenceReport(self._output_dir())
        report.files = [FileOutcome(f["file"], "failed", f["problem"]) for f in plan.pop("failures", [])]
        report.plan = plan
        description = f"writing {self._path}"
        for name, value in track(data.items(), description, total=len(data), unit="file"):
            report.files.append(self._write_one(name, value))
            self._write_report(report)  # still running: a killed run's report lists what it completed
        failures = [f for f in report.files if f.status == "failed"]
        self._write_report(report.finish("failed" if failures else "complete"))
        self._raise_for(failures, len(report.files) - len(failures))

    def _save_shared(self, data: Predictions) -> None:
        """This rank's share: written under rank 0's hold of the folder; rank 0 then writes the one report."""
        if self._shared is None:  # used without the project hook: the save is the whole run
            self.begin_run()
        shared = self._shared
        assert shared is not None
        plan = dict(getattr(data, "report", {}) or {})
        failed = {f["file"]: f["problem"] for f in plan.pop("failures", [])}
        self._one_file_only(data)
        self._refuse_foreign_files(list(data))  # every rank checks every name: all refuse, or none
        mine = self.ranks.share([*data, *failed])
        outcomes = [FileOutcome(name, "failed", failed[name]) for name in mine if name in failed]
        description = f"writing {self._path} ({self.ranks})"
        writes = [name for name in mine if name in data]
        for name in track(writes, description, total=len(writes), unit="file"):
            outcomes.append(self._write_one(name, data[name]))
        records = shared.finish(outcomes)
        if records is not None:  # rank 0, once every rank has finished: the run's report, every rank's failures
            outcomes, stopped = merged_outcomes(records)
            if self._run is not None:
                self._run.plan, self._run.files, self._run.reason = plan, outcomes, "; ".join(stopped) or None
                failed_any = stopped or any(f.status == "failed" for f in outcomes)
                self._write_report(self._run.finish("failed" if failed_any else "complete"))
        failures = [f for f in outcomes if f.status == "failed"]
        self._raise_for(failures, len(outcomes) - len(failures))

    def _write_one(self, name: str, value: Volume | Callable[[], Volume]) -> FileOutcome:
        target = self._target(name)
        try:
            volume = value() if callable(value) else value
            volume.metadata = {**volume.metadata, PROVENANCE_KEY: PROVENANCE_VALUE}
            self._write_volume(target, volume)
        except (VolumeFormatError, OSError, ValueError) as exc:
            logger.error("could not write %s: %s", target, exc)
            return FileOutcome(name, "failed", str(exc), self.ranks.rank if self.ranks.distributed else None)
        logger.info("wrote %s", target)
        return FileOutcome(name, "written", rank=self.ranks.rank if self.ranks.distributed else None)

    def _raise_for(self, failures: list[FileOutcome], written: int) -> None:
        if not failures:
            return
        listing = "\n  - ".join(f"{f.file}: {f.problem}" for f in failures)
        raise DatasetError(
            f"{len(failures)} volume(s) could not be predicted or written ({written} written"
            + (f"; report: {self.report_file}" if self.report_file else "")
            + f"):\n  - {listing}"
        )

    def _write_volume(self, target: Path, volume: Volume) -> None:
        """One volume to ``target`` (a subclass may choose the format by name)."""
        save_volume(target, volume)

    def preview(self) -> ImagePreview:
        """kedro-viz preview: the z maximum projection of the folder's first volume (read slab by slab)."""
        from fusemycell.datasets.tiff_volume_dataset import max_projection_png

        sources = self.load()
        if not sources:
            raise DatasetError(f"{self._path}: no TIFF volume to preview")
        try:
            volume = next(iter(sources.values()))()
        except VolumeFormatError as exc:
            raise DatasetError(str(exc)) from exc
        try:
            return ImagePreview(base64.b64encode(max_projection_png(volume.data)).decode("utf-8"))
        finally:
            close(volume)

    def _exists(self) -> bool:
        """Volumes to read, or one file (what it is, the load says)."""
        if self._path.is_file():
            return True
        try:
            return bool(list_tiffs(self._path)[0])
        except DatasetError:
            return False
