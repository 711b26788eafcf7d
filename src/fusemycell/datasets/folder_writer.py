"""Datasets that write a folder hold its lock: for a whole run (the project hook), or for one save."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from kedro.io.core import DatasetError

from fusemycell.io import folder_lock


class LockedFolderWriter:
    """Mixin for a dataset writing into :meth:`_lock_folder` (default ``self._path``).

    The project hook calls :meth:`begin_run` before the first node of a run that writes the
    dataset, and :meth:`end_run` after its last: a second run on the same folder then fails
    at once, before doing any work. Used alone (a notebook), each save takes the lock itself.
    """

    _path: Path

    def _lock_folder(self) -> Path:
        return self._path

    @contextlib.contextmanager
    def _converted(self) -> Iterator[None]:
        try:
            yield
        except folder_lock.FolderBusyError as exc:
            raise DatasetError(str(exc)) from exc
        except OSError as exc:  # a read-only mount, a folder of someone else's
            raise DatasetError(f"{self._lock_folder()}: cannot write here ({exc.strerror or exc})") from exc

    def begin_run(self) -> None:
        """Take the folder for this run."""
        with self._converted():
            folder_lock.acquire(self._lock_folder())

    def end_run(self, error: BaseException | None = None) -> None:
        """Give the folder back."""
        folder_lock.release(self._lock_folder())

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """``with self._writing(): ...`` around a save: the only writer of the folder."""
        with self._converted():  # only taking the lock: the save's own errors name their files
            folder_lock.acquire(self._lock_folder())
        try:
            yield
        finally:
            folder_lock.release(self._lock_folder())
