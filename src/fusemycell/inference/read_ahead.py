"""Read ahead and compute ahead in a background thread, so the network does not wait for the disk.

:class:`BackgroundIterator` runs an iterator in a daemon thread and hands its
items to the caller in order, at most ``depth`` items ahead of it (a semaphore
counts the items made and not yet taken, the one being made included): at most
``depth + 1`` items are alive, the caller's own among them. :class:`BackgroundPlanes` wraps a sequential array-like
(planes read in increasing order, as :func:`fusemycell.io.tiff.write_volume`
does) so that planes ``z + 1, z + 2, ...`` are computed while the caller writes
plane ``z``.

An exception in the thread is raised in the caller, the same object (type and
traceback kept), with the worker's description (which names the file) in its
message and in a note. Neither class imports Kedro or torch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

_ITEM, _END, _ERROR = "item", "end", "error"
_POLL_S = 0.1


def _work(iterator: Iterator[Any], items: queue.Queue, slots: threading.Semaphore, stop: threading.Event) -> None:
    """The thread's loop; it holds no reference to the :class:`BackgroundIterator` (which may then be collected)."""
    try:
        while True:
            while not slots.acquire(timeout=_POLL_S):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            try:
                item = next(iterator)
            except StopIteration:
                items.put((_END, None))
                return
            items.put((_ITEM, item))
            del item
    except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
        items.put((_ERROR, exc))


def _name_the_worker(exc: BaseException, description: str, path: str | None) -> BaseException:
    """Add where the exception happened to its message (a plain text one not naming the file) and as a note."""
    named = path is not None and (path in str(exc) or path.rsplit("/", 1)[-1] in str(exc))
    if not named and description not in str(exc) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} (in the background thread {description})",)
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in the background thread {description}")
    return exc


class BackgroundIterator:
    """Iterate over ``iterable`` in a background thread, at most ``depth`` items ahead of the caller.

    The thread starts on the first ``next()``. :meth:`close` (also on garbage
    collection, or leaving a ``with`` block) asks it to stop after the item it is making.

    Parameters
    ----------
    iterable
        What to iterate over; it must not need the caller's thread.
    depth
        Items made ahead of the caller (>= 1); each costs the memory of one item.
    description
        Names the work and its file in errors, e.g. ``reading /data/x.tif``.
    path
        The file worked on: a message that already names it is left as it is (the note is still added).
    """

    def __init__(
        self,
        iterable: Iterable[Any],
        *,
        depth: int = 1,
        description: str = "background worker",
        path: str | None = None,
    ):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = int(depth)
        self.description = description
        self.path = None if path is None else str(path)
        self._iterator = iter(iterable)
        self._items: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(self.depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = False

    def __iter__(self) -> BackgroundIterator:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        if self._thread is None:
            self._thread = threading.Thread(
                target=_work,
                args=(self._iterator, self._items, self._slots, self._stop),
                name=f"fusemycell {self.description}",
                daemon=True,
            )
            self._iterator = None  # type: ignore[assignment] - the thread owns it now
            self._thread.start()
        while True:
            try:
                kind, value = self._items.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._items.empty():
                    self._done = True
                    raise RuntimeError(f"the background thread {self.description} ended without a result") from None
        self._slots.release()
        if kind == _ITEM:
            return value
        self._done = True
        self._stop.set()
        if kind == _ERROR:
            raise _name_the_worker(value, self.description, self.path)
        raise StopIteration

    def close(self) -> None:
        """Stop the thread after the item it is making (it is a daemon: it never keeps the process alive)."""
        self._done = True
        self._stop.set()
        while True:  # free the items made ahead, and the slots the thread may wait for
            try:
                self._items.get_nowait()
            except queue.Empty:
                break
            self._slots.release()
        # wait for the item being made: a daemon thread still inside a torch kernel when Python exits is killed
        # through pybind11's GIL release, which aborts the process ("terminate called without an active exception")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread() and thread.is_alive():
            thread.join(timeout=60)

    def __enter__(self) -> BackgroundIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class BackgroundPlanes:
    """Sequential array-like: the planes of ``inner``, computed in a background thread up to ``depth`` ahead.

    ``planes[z]`` must be asked in increasing order ``0, 1, 2, ...`` (each once);
    the result equals ``inner[z]``. Shape and dtype are ``inner``'s.
    """

    def __init__(self, inner: Any, *, depth: int = 16, description: str = "computing planes", path: str | None = None):
        self.inner = inner
        self.path = path
        self.shape = tuple(int(s) for s in inner.shape)
        self.dtype = np.dtype(getattr(inner, "dtype", np.float32))
        self.depth = int(depth)
        self.description = description
        self._planes: BackgroundIterator | None = None
        self._next = 0

    @property
    def ndim(self) -> int:
        """Always 3."""
        return 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: Any) -> np.ndarray:
        if not isinstance(z, (int, np.integer)):
            raise TypeError(f"BackgroundPlanes hands out one plane at a time (an integer index), got {z!r}")
        z = int(z) % self.shape[0]
        if z != self._next:
            raise IndexError(f"BackgroundPlanes hands out planes in order: asked for {z}, next is {self._next}")
        if self._planes is None:
            inner = self.inner  # the generator must not hold self (see BackgroundIterator)
            self._planes = BackgroundIterator(
                (inner[k] for k in range(self.shape[0])),
                depth=self.depth,
                description=self.description,
                path=self.path,
            )
        self._next += 1
        plane = next(self._planes)
        if self._next == self.shape[0]:
            self._planes.close()
        return plane

    def close(self) -> None:
        """Stop the background thread (planes not yet asked for are not computed)."""
        if self._planes is not None:
            self._planes.close()
