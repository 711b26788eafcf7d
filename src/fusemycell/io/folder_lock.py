"""One writer per output folder: a lock file naming its owner, with stale locks detected.

Two runs writing into one folder would remove each other's temporary files (the
leftover cleaning of a killed run) and interleave their outputs. Every dataset that
writes a folder takes :class:`FolderLock` first: a second run fails at once, naming
the folder and the process that holds it. A lock whose process is gone (same machine)
is stale and taken over with a warning. The lock is re-entrant within one process, so
a run that took it at its start can save into the folder later.

Only the process that took a lock removes it (:func:`release`), and a run removes only the folders it
made itself (:func:`make_folders` says which; :func:`remove_empty` removes them when they hold nothing,
not even another run's lock): a run refused because another holds the folder leaves everything as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fusemycell.errors import Setting, UserError

logger = logging.getLogger(__name__)

#: Name of the lock file inside the locked folder (hidden: folder listings skip it).
LOCK_NAME = ".fusemycell.lock"

_held: dict[Path, int] = {}  # folder -> nesting depth, for this process
_guard = threading.Lock()


class FolderBusyError(UserError):
    """Another live process holds the folder's lock (the message names it, and the setting to change)."""


def make_folders(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those this call created, deepest first.

    A folder that another process creates at the same moment is not counted: only what this call made
    is this run's to remove.
    """
    missing = []
    current = Path(folder).expanduser().absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        created.append(path)
    return created[::-1]


def remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` (deepest first) that are empty; stop at the first that is not.

    Nothing in them is deleted: a folder holding anything (a file, another run's lock) stays.
    """
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def read_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The lock's owner record (pid, host, started, command), or None when the folder is not locked."""
    try:
        return json.loads((Path(folder) / LOCK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "started": None, "command": "(unreadable lock file)"}


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, int | float) else "?"
    return f"process {owner.get('pid')} on {owner.get('host')}, started {when}: {owner.get('command')}"


def _is_stale(owner: dict[str, Any]) -> bool:
    pid = owner.get("pid")
    return owner.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


def _create(lock: Path) -> bool:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)) or "python",
    }
    try:
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    return True


def owner_alive(owner: dict[str, Any]) -> bool:
    """True unless the lock's process is known to be gone (a lock from another machine counts as alive)."""
    return not _is_stale(owner)


def acquire(folder: str | os.PathLike, setting: Setting | None = None) -> Path:
    """Take the lock of ``folder`` (created if needed) for this process; re-entrant.

    ``setting``: the parameter that chooses the folder, named in the message when another run holds it.

    Raises
    ------
    FolderBusyError
        Naming the folder and the live process that holds it.
    """
    path = Path(folder).resolve()
    with _guard:
        if path in _held:
            _held[path] += 1
            return path
        path.mkdir(parents=True, exist_ok=True)
        lock = path / LOCK_NAME
        for _ in range(3):
            if _create(lock):
                _held[path] = 1
                return path
            owner = read_owner(path)
            if owner is None:  # released between our two looks
                continue
            if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                _held[path] = 1  # ours, from before a fork or a reload of this module
                return path
            if not _is_stale(owner):
                choose = {"output": setting} if setting is not None else {}
                raise FolderBusyError(
                    "{folder} is in use by another fusemycell run ({owner}); wait for it to finish, or choose "
                    "another folder" + (": {output}" if choose else "") + ". If that process is gone, delete {lock}",
                    folder=path,
                    owner=_describe(owner),
                    lock=lock,
                    **choose,
                )
            logger.warning("%s: taking over the lock of a run that no longer exists (%s)", path, _describe(owner))
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        raise FolderBusyError(
            "{folder}: could not take the lock {lock} (another run keeps taking it)", folder=path, lock=lock
        )


def release(folder: str | os.PathLike) -> None:
    """Give back one level of this process's lock on ``folder``; the file goes with the last."""
    path = Path(folder).resolve()
    with _guard:
        depth = _held.get(path, 0)
        if depth > 1:
            _held[path] = depth - 1
            return
        _held.pop(path, None)
        owner = read_owner(path)
        if depth and owner is not None and owner.get("pid") == os.getpid():
            with contextlib.suppress(OSError):  # cleaning up never hides the error that ended the run
                (path / LOCK_NAME).unlink()


def holds(folder: str | os.PathLike) -> bool:
    """True when this process holds the lock of ``folder``."""
    return Path(folder).resolve() in _held


@contextlib.contextmanager
def locked(folder: str | os.PathLike):
    """``with locked(folder): ...`` writes into ``folder`` as its only writer."""
    acquire(folder)
    try:
        yield Path(folder)
    finally:
        release(folder)
