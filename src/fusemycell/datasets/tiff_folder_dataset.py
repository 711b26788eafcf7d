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
from fusemycell.datasets.folder_writer import LockedFolderWriter
from fusemycell.inference.report import FileOutcome, InferenceReport, interrupted, read_report, report_path
from fusemycell.io import folder_lock
from fusemycell.io.atomic import remove_leftovers
from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError
from fusemycell.progress import track

logger = logging.getLogger(__name__)

#: Metadata key that marks a TIFF as written by fusemycell (a prediction, safe to replace).
PROVENANCE_KEY = "fusemycell"
PROVENANCE_VALUE = f"prediction by fusemycell {__version__}"

TIFF_SUFFIXES = (".tif", ".tiff")


def written_by_fusemycell(path: str | os.PathLike) -> bool:
    """True when ``path`` is a TIFF that carries fusemycell's provenance mark (reads the header only)."""
    try:
        return str(read_info(path).metadata.get(PROVENANCE_KEY, "")).startswith("prediction by fusemycell")
    except (VolumeFormatError, OSError):
        return False


def list_tiffs(location: Path) -> tuple[dict[str, str], list[str]]:
    """``({name: path}, [problems])`` of the TIFF files of a folder, or of one TIFF file.

    Hidden files are skipped; dangling links and folders named ``*.tif`` are problems, not inputs.
    """
    if location.is_file():
        if location.suffix.lower() not in TIFF_SUFFIXES:
            raise DatasetError(f"{location}: not a .tif/.tiff file")
        return {location.name: str(location)}, []
    if not location.is_dir():
        what = "a link to nothing" if location.is_symlink() else "no such file or folder"
        raise DatasetError(f"{location}: {what}")
    files, problems = {}, []
    for entry in sorted(location.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in TIFF_SUFFIXES:
            continue
        if entry.is_file():
            files[entry.name] = str(entry)
        elif entry.is_dir():
            problems.append(f"{entry.name}: a folder, not a TIFF file")
        else:
            problems.append(f"{entry.name}: a link to a file that does not exist")
    return files, problems


Predictions = Mapping[str, Volume | Callable[[], Volume]]


class TiffFolderDataset(LockedFolderWriter, AbstractDataset[Predictions, dict[str, str]]):
    """``load``: ``{file name: path}`` of the folder's ``*.tif``/``*.tiff``, or of one file (no voxels read).
    ``save``: ``{file name: Volume or callable}``, each written atomically under that name.

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
    def report_file(self) -> Path | None:
        """Where the runs into this folder write their report (None without ``report_dir``)."""
        return report_path(self._report_dir, self._path) if self._report_dir else None

    def load(self) -> dict[str, str]:
        """The TIFF files by name; folders named ``*.tif`` and dangling links are reported once."""
        files, problems = list_tiffs(self._path)
        if problems:
            logger.warning("%s: %d entries ignored:\n  - %s", self._path, len(problems), "\n  - ".join(problems))
        return files

    # ------------------------------------------------------------------ a run's lifetime
    def begin_run(self) -> None:
        """Called by the project hook before the first node: take the folder, and start this run's report.

        A folder another run holds fails here and its report is left to that run. A folder that
        cannot be written fails here too, and the report says so. A report left ``running`` by a
        killed run is named in the log and kept in the new report.
        """
        try:
            super().begin_run()
        except DatasetError as exc:
            if not isinstance(exc.__cause__, folder_lock.FolderBusyError):
                self._report_quietly(self._new_report().finish("failed", str(exc)))
            raise
        self._run = self._new_report()
        self._write_report(self._run)

    def end_run(self, error: BaseException | None = None) -> None:
        """Called by the project hook after the run: a run that failed before saving says so in its report."""
        run, self._run = self._run, None
        if run is not None and run.status == "running":
            reason = f"the run failed before any prediction: {error}" if error else None
            self._write_report(run.finish("failed" if error else "nothing to write", reason))
        super().end_run(error)

    def refuse(self, error: BaseException) -> None:
        """The run was refused before it started (an unsafe output folder, invalid parameters): the report says so.

        Nothing is created in the output folder; a report that a live run into it is writing is left alone.
        """
        owner = folder_lock.read_owner(self._path) if self._path.is_dir() else None
        if owner is not None and not folder_lock.holds(self._path) and folder_lock.owner_alive(owner):
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
        if self.report_file is None:
            return
        try:
            report.write(self.report_file)
        except OSError as exc:
            raise DatasetError(f"could not write the report {self.report_file}: {exc}") from exc

    # ------------------------------------------------------------------ saving
    def save(self, data: Predictions) -> None:
        """Write every volume; then fail naming those that could not be written."""
        try:
            self._path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"{self._path}: cannot create the output folder ({exc.strerror or exc})") from exc
        with self._writing():
            self._save_locked(data)

    def _refuse_foreign_files(self, names: list[str]) -> None:
        if self._overwrite:
            return
        foreign = [n for n in names if (self._path / n).exists() and not written_by_fusemycell(self._path / n)]
        if foreign:
            raise DatasetError(
                f"{self._path}: refusing to replace {len(foreign)} file(s) that fusemycell did not write "
                f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); nothing was written. "
                "Choose an empty output folder (--params inference.output_dir=FOLDER), or set "
                "inference.overwrite: true to replace them"
            )

    def _save_locked(self, data: Predictions) -> None:
        plan = dict(getattr(data, "report", {}) or {})
        self._refuse_foreign_files(list(data))
        remove_leftovers(self._path)  # temporary files of a previous, killed run (we hold the folder)
        report = self._run or InferenceReport(self._output_dir())
        report.files = [FileOutcome(f["file"], "failed", f["problem"]) for f in plan.pop("failures", [])]
        report.plan = plan
        for name, value in track(data.items(), f"writing {self._path}", total=len(data), unit="file"):
            target = self._path / name
            try:
                volume = value() if callable(value) else value
                volume.metadata = {**volume.metadata, PROVENANCE_KEY: PROVENANCE_VALUE}
                self._write_volume(target, volume)
                report.files.append(FileOutcome(name, "written"))
                logger.info("wrote %s", target)
            except (VolumeFormatError, OSError, ValueError) as exc:
                report.files.append(FileOutcome(name, "failed", str(exc)))
                logger.error("could not write %s: %s", target, exc)
            self._write_report(report)  # still running: a killed run's report lists what it completed
        failures = [f for f in report.files if f.status == "failed"]
        self._write_report(report.finish("failed" if failures else "complete"))
        if failures:
            listing = "\n  - ".join(f"{f.file}: {f.problem}" for f in failures)
            written = len(report.files) - len(failures)
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

        files = self.load()
        if not files:
            raise DatasetError(f"{self._path}: no TIFF volume to preview")
        try:
            volume = read_volume(next(iter(files.values())), lazy=True)
        except VolumeFormatError as exc:
            raise DatasetError(str(exc)) from exc
        return ImagePreview(base64.b64encode(max_projection_png(volume.data)).decode("utf-8"))

    def _exists(self) -> bool:
        try:
            return bool(list_tiffs(self._path)[0])
        except DatasetError:
            return False
