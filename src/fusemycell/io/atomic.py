"""Names and clean-up of atomic writes: every writer puts its data in a temporary sibling, then renames.

A temporary file is ``.NAME.XXXXXXXX.partial`` (or ``.old`` for the previous version
of a folder moved aside) next to its target: hidden, so readers skip it, and of a
form that :func:`remove_leftovers` recognises after a killed run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any, Protocol, TypeVar

logger = logging.getLogger(__name__)


def discard(path: Path) -> None:
    """Remove a temporary file (or folder) if it is there; failing to (read-only folder) must not hide the
    error being reported."""
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.(partial|old)$")
_P = TypeVar("_P", bound=PurePath)


def temporary_sibling(path: _P, kind: str = "partial") -> _P:
    """``.NAME.XXXXXXXX.partial`` (or ``.old``) next to ``path``: where an atomic write puts its data first.

    Every atomic writer of the project names its temporary files this way, so that
    readers skip them (hidden names) and :func:`remove_leftovers` finds them.
    """
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.{kind}"


def remove_leftovers(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete what killed atomic writes left in ``folder``: ``.NAME.XXXXXXXX.partial`` (or ``.old``).

    Only entries of exactly that form are touched (``name`` limits them to one
    target). Call it before writing into a folder, never while another process
    writes there. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    if removed:
        logger.info("removed %d leftover(s) of interrupted writes in %s", len(removed), folder)
    return removed


def could_not_write(path: str | os.PathLike, exc: OSError) -> OSError:
    """The error to raise for ``exc`` while writing ``path``: the same errno, a message naming the file."""
    return OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def writing_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """``with writing_atomically(target) as temporary: write(temporary)``: the one way this project writes.

    The block writes a file, or a folder, at ``temporary`` (a hidden sibling of ``target``, see
    :func:`temporary_sibling`); once it ends, the temporary is renamed over ``target`` (a folder with
    :func:`replace_folder`). If the block or the rename raises, the temporary is discarded and
    ``target`` is left as it was. ``target``'s folder is created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        if temporary.is_dir():
            replace_folder(temporary, target)
        else:
            os.replace(temporary, target)
    except BaseException:
        discard(temporary)
        raise


class Files(Protocol):
    """The file operations :func:`replace_folder` needs, on paths of one filesystem."""

    def exists(self, path: Any) -> bool:
        """Whether something is at ``path``."""

    def move(self, source: Any, target: Any) -> None:
        """Rename ``source`` to ``target`` (atomic on a local filesystem)."""

    def remove(self, path: Any) -> None:
        """Delete the file or folder at ``path``."""


class LocalFiles:
    """:class:`Files` on the local filesystem."""

    def exists(self, path: Any) -> bool:
        """Whether something is at ``path``."""
        return Path(path).exists()

    def move(self, source: Any, target: Any) -> None:
        """``os.replace``."""
        os.replace(source, target)

    def remove(self, path: Any) -> None:
        """Delete a folder (or a file); a failure leaves it for :func:`remove_leftovers`."""
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)


def replace_folder(new: _P, target: _P, files: Files | None = None) -> None:
    """Put the folder ``new`` at ``target``: a previous ``target`` is moved aside first, put back if the
    rename fails, and deleted last. ``files`` are the operations of another filesystem (fsspec's,
    for Kedro datasets); by default the local one's."""
    files = files or LocalFiles()
    old = None
    if files.exists(target):
        old = temporary_sibling(target, "old")
        files.move(target, old)
    try:
        files.move(new, target)
    except BaseException:
        if old is not None:
            files.move(old, target)  # the previous version stays where it was
        raise
    if old is not None:
        files.remove(old)
