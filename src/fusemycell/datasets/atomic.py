"""kedro-datasets' JSON, CSV and Matplotlib datasets, saved atomically (temporary file, then rename).

The originals write straight into the target: a run killed mid-save, or a full
disk, leaves a truncated report where the previous good one was. These
subclasses write to a hidden ``.NAME.XXXXXXXX.partial`` sibling and rename it
over the target only once it is complete (an atomic ``rename`` on a local
filesystem). On failure the temporary file is removed, the previous artefact is
untouched, and the error names the target path. Loading, previews and options
are the originals'.

Use them in the catalog as ``fusemycell.datasets.atomic.JSONDataset`` etc.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro.io.core import DatasetError, get_filepath_str
from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset

from fusemycell.io.atomic import temporary_sibling


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
            _replace(fs, temporary_str, final_str)
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


def _replace(fs: Any, source: str, target: str) -> None:
    """Move ``source`` over ``target``; a folder (a list or dict of figures) replaces the old folder."""
    if fs.isdir(source) and fs.exists(target):
        old = str(temporary_sibling(PurePosixPath(target), "old"))
        fs.mv(target, old, recursive=True)
        fs.mv(source, target, recursive=True)
        fs.rm(old, recursive=True)
        return
    fs.mv(source, target, recursive=fs.isdir(source))


class JSONDataset(AtomicSave, _JSONDataset):
    """``json.JSONDataset``, saved atomically."""


class CSVDataset(AtomicSave, _CSVDataset):
    """``pandas.CSVDataset``, saved atomically."""


class MatplotlibDataset(AtomicSave, _MatplotlibDataset):
    """``matplotlib.MatplotlibDataset``, saved atomically (a list or dict of figures: the whole folder)."""
