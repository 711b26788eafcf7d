"""Datasets that write a folder hold its lock: for a whole run (the project hook), or for one save.

A run that fails leaves no folder behind that it created and wrote nothing into (taking the lock
creates the folder; an empty output folder after a failed run would look like a result). It removes
only the folders it made itself (:func:`fusemycell.io.folder_lock.make_folders`), and only when they
are empty: a folder holding anything, another run's lock included, stays.

(The inference output folder is not written through this mixin: its run, lock and report are an
:class:`fusemycell.inference.run.InferenceRun`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from kedro.io.core import DatasetError

from fusemycell.io import folder_lock


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    current = folder.expanduser().absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders of ``folders`` (deepest first) that are empty; nothing inside any folder is deleted.

    A folder that holds anything (a file, a hidden one, another run's lock) stays, and so do its parents.
    """
    folder_lock.remove_empty(folders)


class LockedFolderWriter:
    """Mixin for a dataset writing into :meth:`_lock_folder` (default ``self._path``).

    The project hook calls :meth:`begin_run` before the first node of a run that writes the
    dataset, and :meth:`end_run` after its last: a second run on the same folder then fails
    at once, before doing any work. Used alone (a notebook), each save takes the lock itself.
    """

    _path: Path
    _created: list[Path] | None = None

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
            created = folder_lock.make_folders(self._lock_folder())
            folder_lock.acquire(self._lock_folder())
        self._created = created

    def end_run(self, error: BaseException | None = None) -> None:
        """Give the folder back; after a failure, remove the folders this run created if they are empty."""
        created, self._created = self._created, None
        folder_lock.release(self._lock_folder())
        if error is not None and created:
            folder_lock.remove_empty(created)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """``with self._writing(): ...`` around a save: the only writer of the folder (the folders it makes are
        removed if it fails leaving them empty)."""
        with self._converted():  # only taking the lock: the save's own errors name their files
            made = folder_lock.make_folders(self._lock_folder())
            folder_lock.acquire(self._lock_folder())
        try:
            yield
        except BaseException:
            folder_lock.release(self._lock_folder())
            folder_lock.remove_empty(made)
            raise
        folder_lock.release(self._lock_folder())
