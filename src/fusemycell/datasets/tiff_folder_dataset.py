"""``TiffFolderDataset``: a flat folder of TIFF volumes with any names (challenge inputs and predictions)."""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from fusemycell import __version__
from fusemycell.datasets.previews import ImagePreview
from fusemycell.datasets.volume_sources import VolumeSource, close, list_tiffs
from fusemycell.errors import Setting, UserError
from fusemycell.inference.folders import is_file_output
from fusemycell.inference.report import FileOutcome, report_path
from fusemycell.inference.run import InferenceRun, active_run
from fusemycell.io.formats import read_info
from fusemycell.io.metadata import PROVENANCE_KEY, PROVENANCE_PREFIX, prediction_mark
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError
from fusemycell.progress import track

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


def _marked(metadata: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``metadata`` with this version's provenance mark."""
    return {**metadata, PROVENANCE_KEY: PROVENANCE_VALUE}


class SaveFailed(UserError):
    """Some volumes could not be predicted or written (each named, with why); the others were written."""


class TiffFolderDataset(AbstractDataset[Predictions, dict[str, VolumeSource]]):
    """``load``: ``{file name: VolumeSource}`` of the folder's ``*.tif``/``*.tiff``, or of one file: call one
    for its volume, read lazily. ``save``: ``{file name: Volume or callable}``, each written atomically.
    A ``path`` ending in ``.tif``/``.tiff`` (not an existing folder) saves one volume as exactly that file.

    What it writes are predictions: each file carries the metadata key ``fusemycell``
    (its provenance mark). An existing file without that mark is never replaced, unless
    ``overwrite`` is true: the save stops before writing anything, naming the file. One
    file that fails (unreadable input found while streaming, disk error) does not stop
    the others: they are all written, then the save fails naming every file that could
    not be written.

    The run a save belongs to (the folder's lock, the report, the ranks that share the files) is not
    the dataset's: it is the :class:`~fusemycell.inference.run.InferenceRun` this process started
    for the folder (:func:`~fusemycell.inference.run.active_run`; the project hook starts one for
    every inference run), or, when there is none (a notebook, a test), one made for this save alone,
    writing its report to ``report_dir``. The dataset tells the run what became of each file.
    """

    def __init__(
        self,
        *,
        path: str | os.PathLike,
        overwrite: bool = False,
        report_dir: str | os.PathLike | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A dataset over the local folder ``path``; a save made alone reports to ``report_dir`` (none: no report)."""
        self._path = Path(path)
        self._overwrite = bool(overwrite)
        self._report_dir = Path(report_dir) if report_dir else None
        self.metadata = metadata

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

    def _target(self, name: str) -> Path:
        """Where the prediction ``name`` is written: in the folder under its name, or the one file named."""
        return self._path if self._one_file else self._path / name

    @property
    def report_file(self) -> Path | None:
        """Where a save made alone writes its report (None without ``report_dir``)."""
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

    # ------------------------------------------------------------------ saving
    def save(self, data: Predictions) -> None:
        """Write every volume (this rank's share of them) into the folder's run; then fail naming those that
        could not be written."""
        self._one_file_only(data)
        run = active_run(self.folder)
        if run is not None:
            self._save_into(run, data)
            return
        run = InferenceRun(self._path, report_dir=self._report_dir).start()  # a save made alone is its own run
        error: BaseException | None = None
        try:
            self._save_into(run, data)
        except BaseException as exc:
            error = exc
            raise
        finally:
            run.finish(error)

    def _save_into(self, run: InferenceRun, data: Predictions) -> None:
        plan = dict(getattr(data, "report", {}) or {})  # a PredictionPlan says what the run read and skipped
        failed = {f["file"]: f["problem"] for f in plan.pop("failures", [])}
        self._refuse_foreign_files(list(data))  # every rank checks every name: all refuse, or none
        run.set_plan(plan)
        mine = run.share([*data, *failed])
        for name in mine:
            if name in failed:
                run.record(FileOutcome(name, "failed", failed[name]))
        writes = [name for name in mine if name in data]
        description = f"writing {self._path}" + (f" ({run.ranks})" if run.ranks.distributed else "")
        for name in track(writes, description, total=len(writes), unit="file"):
            run.record(self._write_one(name, data[name]))
        failures = run.end_save()
        self._raise_for(failures, run)

    def _one_file_only(self, data: Predictions) -> None:
        """An output naming one file takes one prediction (of one input file)."""
        if self._one_file and len(data) > 1:
            raise UserError(
                "{path}: one output file for {count} predictions ({names}); nothing was written. Give a folder for "
                "the predictions of several inputs: {output}",
                path=self._path,
                count=len(data),
                names=", ".join(list(data)[:3]) + (", ..." if len(data) > 3 else ""),
                output=Setting("inference.output_dir", "FOLDER"),
            )

    def _refuse_foreign_files(self, names: list[str]) -> None:
        if self._overwrite:
            return
        targets = [self._target(n) for n in names]
        foreign = [t.name for t in targets if t.exists() and not written_by_fusemycell(t)]
        if foreign:
            raise UserError(
                "{folder}: refusing to replace {count} file(s) that fusemycell did not write ({names}); nothing was "
                "written. Choose an empty output folder ({output}), or set {overwrite} to replace them",
                folder=self.folder,
                count=len(foreign),
                names=", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else ""),
                output=Setting("inference.output_dir", "FOLDER"),
                overwrite=Setting("inference.overwrite", "true", assignment=False),
            )

    def _write_one(self, name: str, value: Volume | Callable[[], Volume]) -> FileOutcome:
        """Write one prediction; a problem of that file (unreadable input, disk error) is its outcome."""
        target = self._target(name)
        try:
            volume = value() if callable(value) else value
            try:  # the caller's volume keeps its metadata: the mark goes on a copy
                self._write_volume(target, dataclasses.replace(volume, metadata=_marked(volume.metadata)))
            finally:
                if callable(value):  # made here: its background work and open files end here
                    close(volume)
        except (UserError, OSError) as exc:  # VolumeFormatError is a UserError; a bug keeps its traceback
            logger.error("could not write %s: %s", target, exc)
            return FileOutcome(name, "failed", str(exc))
        logger.info("wrote %s", target)
        return FileOutcome(name, "written")

    def _raise_for(self, failures: list[FileOutcome], run: InferenceRun) -> None:
        if not failures:
            return
        written = sum(1 for f in run.outcomes if f.status == "written")
        # each problem a value of its own: a problem worded for the user (a UserMessage) keeps the command's words
        values = {f"file_{i}": f.file for i, f in enumerate(failures)}
        values.update({f"problem_{i}": f.problem for i, f in enumerate(failures)})
        listing = "\n  - ".join(f"{{file_{i}}}: {{problem_{i}}}" for i in range(len(failures)))
        report = f"; report: {run.report_file}" if run.report_file else ""
        raise SaveFailed(
            "{count} volume(s) could not be predicted or written ({written} written{report}):\n  - " + listing,
            count=len(failures),
            written=written,
            report=report,
            **values,
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
