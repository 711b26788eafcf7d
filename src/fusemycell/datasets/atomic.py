"""kedro-datasets' JSON, CSV and Matplotlib datasets, saved atomically (temporary file, then rename).

The originals write straight into the target: a run killed mid-save, or a full
disk, leaves a truncated report where the previous good one was. These
subclasses write to a hidden ``.NAME.XXXXXXXX.partial`` sibling and rename it
over the target only once it is complete (an atomic ``rename`` on a local
filesystem; a folder of figures with :func:`fusemycell.io.atomic.replace_folder`,
which puts the previous folder back if the rename fails). On failure the
temporary file is removed, the previous artefact is untouched, and the error
names the target path. Loading, previews and options are the originals'.

Use them in the catalog as ``fusemycell.datasets.atomic.JSONDataset`` etc.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset

from fusemycell.io.atomic import replace_folder, temporary_sibling


class AtomicSave:
    """Mixin for fsspec-based kedro datasets whose ``save`` writes to ``self._get_save_path()``."""

    _atomic_target: PurePosixPath | None = None

    def _get_save_path(self) -> PurePosixPath:
        if self._atomic_target is not None:
            return self._atomic_target
        return super()._get_save_path()  # type: ignore[misc]

    def save(self, data: Any) -> None:
        final = super()._get_save_path()  # type: ignore[misc]
        temporary = temporary_sibling(final)
        fs = self._fs  # type: ignore[attr-defined]
        protocol = self._protocol  # type: ignore[attr-defined]
        final_str, temporary_str = get_filepath_str(final, protocol), get_filepath_str(temporary, protocol)
        self._atomic_target = temporary
        try:
            fs.mkdirs(get_filepath_str(final.parent, protocol), exist_ok=True)
            super().save(data)  # type: ignore[misc]
            files = FsspecFiles(fs, protocol)
            if fs.isdir(temporary_str):  # a list or dict of figures: the whole folder replaces the old one
                replace_folder(temporary, final, files)
            else:
                files.move(temporary, final)
        except BaseException as exc:
            if fs.exists(temporary_str):
                fs.rm(temporary_str, recursive=True)
            if isinstance(exc, Exception):
                cause = exc.__cause__ if isinstance(exc, DatasetError) and exc.__cause__ else exc
                raise DatasetError(
                    f"{final_str}: could not save ({type(cause).__name__}: {cause}); "
                    "the previous version, if any, is unchanged"
                ) from exc
            raise
        finally:
            self._atomic_target = None
        self._invalidate_cache()  # type: ignore[attr-defined] # again: the rename came after the parent's call


class FsspecFiles:
    """:class:`fusemycell.io.atomic.Files` on a dataset's fsspec filesystem (paths as the dataset's)."""

    def __init__(self, fs: Any, protocol: str):
        self._fs, self._protocol = fs, protocol

    def _text(self, path: PurePosixPath) -> str:
        return get_filepath_str(PurePosixPath(path), self._protocol)

    def exists(self, path: PurePosixPath) -> bool:
        """Whether something is at ``path``."""
        return bool(self._fs.exists(self._text(path)))

    def move(self, source: PurePosixPath, target: PurePosixPath) -> None:
        """Rename ``source`` (a file or a folder) to ``target``."""
        self._fs.mv(self._text(source), self._text(target), recursive=self._fs.isdir(self._text(source)))

    def remove(self, path: PurePosixPath) -> None:
        """Delete the file or folder at ``path``."""
        self._fs.rm(self._text(path), recursive=True)


class JSONDataset(AtomicSave, _JSONDataset):
    """``json.JSONDataset``, saved atomically."""


class CSVDataset(AtomicSave, _CSVDataset):
    """``pandas.CSVDataset``, saved atomically."""


class MatplotlibDataset(AtomicSave, _MatplotlibDataset):
    """``matplotlib.MatplotlibDataset``, saved atomically (a list or dict of figures: the whole folder)."""
