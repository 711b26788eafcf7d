"""Datasets that write a folder hold its lock: for a whole run (the project hook), or for one save.

A run that fails leaves no folder behind that it created and wrote nothing into (taking the lock
creates the folder; an empty output folder after a failed run would look like a result).
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
    """Remove the folders of ``folders`` (deepest first) that hold nothing (hidden files count as nothing)."""
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        if any(not entry.name.startswith(".") for entry in entries):
            return
        with contextlib.suppress(OSError):
            for entry in entries:
                if entry.is_file():
                    entry.unlink()
            folder.rmdir()


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
        created = missing_folders(self._lock_folder())
        with self._converted():
            folder_lock.acquire(self._lock_folder())
        self._created = created

    def end_run(self, error: BaseException | None = None) -> None:
        """Give the folder back; after a failure, remove the folders this run created if they hold nothing."""
        created, self._created = self._created, None
        folder_lock.release(self._lock_folder())
        if error is not None and created:
            remove_if_empty(created)

    @contextlib.contextmanager
    def _writing(self, created: list[Path] | None = None) -> Iterator[None]:
        """``with self._writing(): ...`` around a save: the only writer of the folder (``created``: the folders
        the save made before, removed with the others if it fails leaving them empty)."""
        created = missing_folders(self._lock_folder()) if created is None else created
        with self._converted():  # only taking the lock: the save's own errors name their files
            folder_lock.acquire(self._lock_folder())
        try:
            yield
        except BaseException:
            folder_lock.release(self._lock_folder())
            remove_if_empty(created)
            raise
        folder_lock.release(self._lock_folder())
