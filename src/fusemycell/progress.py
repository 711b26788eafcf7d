"""Progress of long steps: a bar with rate and ETA on a terminal, one summary line in logs otherwise.

``FUSEMYCELL_PROGRESS`` chooses: ``auto`` (default: a bar when standard error is a
terminal), ``bar``, ``log`` (no bar: a line every :data:`LOG_INTERVAL_S` seconds while the work
runs, so that a log never looks hung, and the summary line) or ``off``.

A program that runs the work in a thread of its own (the napari widget) follows it with
:func:`listen`: every update of progress started in that thread is handed to its callback,
whatever the mode, and the callback stops the work by raising (between two updates: for a
sliding-window prediction, between two batches of tiles).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

# the console bar: bars are drawn only on a terminal, and tqdm.auto would want ipywidgets in a notebook
from tqdm import tqdm

T = TypeVar("T")

MODES = ("auto", "bar", "log", "off")
#: Off a terminal, seconds between two progress lines of work still running (a log silent for minutes
#: reads as a hung program).
LOG_INTERVAL_S = 25.0
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


@dataclass(frozen=True)
class ProgressUpdate:
    """What a :func:`listen` callback is told: ``count`` of ``total`` units (``unit``) of ``description`` done."""

    description: str
    count: int
    total: int | None
    unit: str


ProgressListener = Callable[[ProgressUpdate], None]

# listeners of the progress started in each thread, innermost last
_LISTENERS = threading.local()


def _listeners() -> tuple[ProgressListener, ...]:
    return tuple(getattr(_LISTENERS, "stack", ()))


@contextmanager
def listen(callback: ProgressListener) -> Iterator[None]:
    """Hand every update of the progress started in this thread, inside the block, to ``callback``.

    ``callback`` is called with a :class:`ProgressUpdate` when a :class:`Progress` (or :func:`track`)
    starts (count 0) and after each of its updates, in the thread doing the work. An exception it
    raises propagates out of that work: the way to cancel it between two updates.
    """
    stack = list(_listeners())
    _LISTENERS.stack = (*stack, callback)
    try:
        yield
    finally:
        _LISTENERS.stack = tuple(stack)


class Progress:
    """Push-style progress for work that is not a loop over an iterable (``update`` then ``close``).

    On a terminal: a tqdm bar with count, rate and ETA. Otherwise, every :data:`LOG_INTERVAL_S`
    seconds while it runs, a line ``description: N/total units, T s, R unit/s, ETA`` (from a
    thread of its own: it comes even while one unit takes minutes), and at ``close``
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
        self.total = total
        self.count = 0
        self.closed = False
        self._started = time.perf_counter()
        self._listeners = _listeners()
        self._bar = (
            tqdm(desc=description, total=total, unit=unit, dynamic_ncols=True, leave=False)
            if self.mode == "bar"
            else None
        )
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if self.mode == "log":
            self._heartbeat = threading.Thread(
                target=_beat, args=(weakref.ref(self), self._stop), name=f"progress: {description}", daemon=True
            )
            self._heartbeat.start()
        self._tell_listeners()

    def running_line(self) -> str:
        """The line of work still running: ``description: N/total units, T s, R unit/s, ETA``."""
        elapsed = time.perf_counter() - self._started
        count, total = self.count, self.total
        if not (count or total):
            return f"{self.description}: {elapsed:.0f} s so far"
        done = f"{count}/{total}" if total else str(count)
        line = f"{self.description}: {done} {_plural(self.unit, total or count)}, {elapsed:.0f} s"
        if count:
            rate = count / elapsed if elapsed > 0 else float("inf")
            line += f", {rate:.3g} {self.unit}/s"
            if total:
                line += f", ETA {max(0.0, (total - count) / rate):.0f} s"
        return line

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)
        self._tell_listeners()

    def _tell_listeners(self) -> None:
        if not self._listeners:
            return
        update = ProgressUpdate(self.description, self.count, self.total, self.unit)
        try:
            for listener in self._listeners:
                listener(update)
        except BaseException:  # the listener stopped the work: close the bar, no "done" line
            self.summary = False
            self.close()
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join()
        if self._bar is not None:
            self._bar.close()
        if self.mode != "off" and self.summary:
            logger.info("%s", _summary(self.description, self.count, self.unit, time.perf_counter() - self._started))

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _beat(progress: weakref.ref[Progress], stop: threading.Event) -> None:
    """The running lines of ``progress`` until it closes, or is dropped unclosed (work that failed midway)."""
    while not stop.wait(LOG_INTERVAL_S):
        running = progress()
        if running is None:
            return
        logger.info("%s", running.running_line())
        del running


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
