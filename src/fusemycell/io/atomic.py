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
from typing import TypeVar

logger = logging.getLogger(__name__)


def discard(path: Path) -> None:
    """Remove a temporary file (or folder) if it is there; failing to (read-only folder) must not hide the
    error being reported."""
    with contextlib.suppress(OSError):
        if path.is_dir():
            shutil.rmtree(path)
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


@contextlib.contextmanager
def writing_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """``with writing_atomically(target) as temporary: write(temporary)``: renamed over ``target`` once the
    block ends, discarded if it raises (``target`` is then left as it was)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        discard(temporary)
        raise


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``: a previous ``target`` is moved aside first, put back if the
    rename fails, and deleted last."""
    old = None
    if target.exists():
        old = temporary_sibling(target, "old")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # the previous version stays where it was
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
