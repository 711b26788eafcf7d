"""Progress of long steps: a bar with rate and ETA on a terminal, one summary line in logs otherwise.

``FUSEMYCELL_PROGRESS`` chooses: ``auto`` (default: a bar when standard error is a
terminal), ``bar``, ``log`` (no bar, the summary line only) or ``off``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

# the console bar: bars are drawn only on a terminal, and tqdm.auto would want ipywidgets in a notebook
from tqdm import tqdm

T = TypeVar("T")

MODES = ("auto", "bar", "log", "off")
logger = logging.getLogger("fusemycell.progress")


def progress_mode() -> str:
    """The mode in force: ``bar``, ``log`` or ``off`` (``auto`` resolved against standard error)."""
    mode = os.environ.get("FUSEMYCELL_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FUSEMYCELL_PROGRESS={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "auto":
        stream = sys.stderr
        return "bar" if stream is not None and hasattr(stream, "isatty") and stream.isatty() else "log"
    return mode


class Progress:
    """Push-style progress for work that is not a loop over an iterable (``update`` then ``close``).

    On a terminal: a tqdm bar with count, rate and ETA. Otherwise, at ``close``:
    one INFO line ``description: N units in T s (R unit/s)`` (unless ``summary``
    is false, for loops that log their own line). ``enabled=False`` (e.g. on DDP
    ranks other than 0) shows nothing.
    """

    def __init__(
        self,
        description: str,
        *,
        total: int | None = None,
        unit: str = "it",
        summary: bool = True,
        enabled: bool = True,
    ) -> None:
        self.description, self.unit, self.summary = description, unit, summary
        self.mode = progress_mode() if enabled else "off"
        self.count = 0
        self.closed = False
        self._started = time.perf_counter()
        self._bar = (
            tqdm(desc=description, total=total, unit=unit, dynamic_ncols=True, leave=False)
            if self.mode == "bar"
            else None
        )

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        if self.mode != "off" and self.summary:
            logger.info("%s", _summary(self.description, self.count, self.unit, time.perf_counter() - self._started))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(
    iterable: Iterable[T],
    description: str,
    *,
    total: int | None = None,
    unit: str = "it",
    summary: bool = True,
    enabled: bool = True,
) -> Iterator[T]:
    """Yield the items of ``iterable`` while showing progress (see :class:`Progress`).

    The summary line is written when the loop ends, not when it is abandoned.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    progress = Progress(description, total=total, unit=unit, summary=summary, enabled=enabled)
    try:
        for item in iterable:
            yield item
            progress.update()
    except BaseException:  # abandoned or failed: no "done" line
        progress.summary = False
        raise
    finally:
        progress.close()


def _summary(description: str, count: int, unit: str, elapsed: float) -> str:
    rate = count / elapsed if elapsed > 0 else float("inf")
    return f"{description}: {count} {_plural(unit, count)} in {elapsed:.1f} s ({rate:.3g} {unit}/s)"


def _plural(unit: str, count: int) -> str:
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")
