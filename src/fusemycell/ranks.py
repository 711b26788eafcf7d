"""The processes of one run started by a launcher (``torchrun``, SLURM): who is who, and what each one does.

A launcher that starts several copies of ``kedro run`` sets ``RANK`` and ``WORLD_SIZE`` (and
``MASTER_ADDR``/``MASTER_PORT``) in each. :class:`Ranks` reads them; :meth:`Ranks.share` deals a
sorted list of names out, rank ``r`` taking every ``WORLD_SIZE``-th from the ``r``-th, so every name
goes to exactly one rank and every rank agrees without talking. :class:`RankStore` is how the ranks
of one run tell each other small things (rank 0 took the output folder; what each rank wrote): a
key-value store reached through PyTorch's ``env://`` rendezvous, the one ``torchrun`` provides, with
no process group (a training node of the same run may start its own). No Kedro import.

A rank waits for another only while that one is alive: every rank beats a heartbeat in the store
(:meth:`RankStore.start_heartbeat`) and :meth:`RankStore.collect_from` gives up, naming the rank, once
it has not beaten for :data:`SILENCE_LIMIT`. Ranks started by hand (as a cluster scheduler does), one
of which died, then end within minutes instead of waiting for it for days.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fusemycell.errors import UserError

#: How long a rank waits for rank 0 to take the output folder.
START_TIMEOUT = timedelta(minutes=10)
#: Seconds between two heartbeats of a rank.
HEARTBEAT_S = 5.0
#: How long a rank may stay silent (no heartbeat) before the others stop waiting for it; the
#: environment variable ``FUSEMYCELL_RANK_SILENCE_S`` (seconds) sets another limit.
SILENCE_LIMIT = timedelta(minutes=2)


def silence_limit() -> timedelta:
    """:data:`SILENCE_LIMIT`, or ``FUSEMYCELL_RANK_SILENCE_S`` seconds when set."""
    value = os.environ.get("FUSEMYCELL_RANK_SILENCE_S", "").strip()
    try:
        return timedelta(seconds=float(value)) if value else SILENCE_LIMIT
    except ValueError:
        raise RankError(f"FUSEMYCELL_RANK_SILENCE_S={value!r}: expected a number of seconds") from None


class RankError(UserError, RuntimeError):
    """The launcher's variables do not describe a run, or the ranks cannot reach each other."""


@dataclass(frozen=True)
class Ranks:
    """This process's ``rank`` among the ``world_size`` processes of the run (0 of 1: a plain run)."""

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise RankError(f"RANK={self.rank}, WORLD_SIZE={self.world_size}: expected 0 <= RANK < WORLD_SIZE")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Ranks:
        """From ``RANK`` and ``WORLD_SIZE`` (absent: a plain run)."""
        environ = os.environ if environ is None else environ
        try:
            return cls(int(environ.get("RANK") or 0), int(environ.get("WORLD_SIZE") or 1))
        except ValueError as exc:
            raise RankError(f"RANK/WORLD_SIZE must be integers: {exc}") from None

    @property
    def distributed(self) -> bool:
        """True when the run has several processes."""
        return self.world_size > 1

    @property
    def lead(self) -> bool:
        """True for rank 0: it takes the shared folders and writes the run's report."""
        return self.rank == 0

    def owner(self, name: str, names: Sequence[str]) -> int:
        """The rank whose share holds ``name`` (one of ``names``)."""
        return sorted(names).index(name) % self.world_size

    def share(self, names: Sequence[str]) -> list[str]:
        """This rank's names: every ``world_size``-th of the sorted ``names``, from the ``rank``-th."""
        return sorted(names)[self.rank :: self.world_size]

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


class RankStore:
    """JSON messages between the ranks of one run, under a prefix of their own (:meth:`publish`, :meth:`collect`)."""

    def __init__(self, store: Any, ranks: Ranks) -> None:
        self.store = store
        self.ranks = ranks
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def connect(cls, ranks: Ranks, prefix: str) -> RankStore:
        """Reach the run's store (rank 0, or torchrun's agent, hosts it).

        Raises
        ------
        RankError
            When ``MASTER_ADDR``/``MASTER_PORT`` are missing or the store cannot be reached.
        """
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise RankError(
                f"WORLD_SIZE={ranks.world_size} but {' and '.join(missing)} not set: start the ranks with torchrun "
                "(or set MASTER_ADDR and MASTER_PORT to rank 0's host and a free port)"
            )
        import torch.distributed as dist

        url = f"env://?rank={ranks.rank}&world_size={ranks.world_size}"
        try:
            store, _, _ = next(dist.rendezvous(url, timeout=START_TIMEOUT))
        except (RuntimeError, ValueError, OSError) as exc:
            raise RankError(
                f"{ranks}: could not reach the other ranks at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
                f" ({exc})"
            ) from exc
        return cls(dist.PrefixStore(prefix, store), ranks)

    def publish(self, key: str, value: Any) -> None:
        """Make ``value`` (JSON) known to every rank under ``key``.

        Raises
        ------
        RankError
            When the store cannot be reached any more (rank 0 or the launcher ended).
        """
        try:
            self.store.set(key, json.dumps(value, default=str))
        except RuntimeError as exc:
            raise RankError(f"{self.ranks}: the other ranks cannot be reached any more ({exc})") from exc

    def collect(self, key: str, timeout: timedelta = START_TIMEOUT) -> Any:
        """The value published under ``key``, waiting for it up to ``timeout``.

        Raises
        ------
        RankError
            When nothing was published in time.
        """
        try:
            self.store.wait([key], timeout)
            return json.loads(self.store.get(key))
        except RuntimeError as exc:
            raise RankError(f"{self.ranks}: no {key!r} from the other ranks after {timeout} ({exc})") from exc

    def beats(self, rank: int) -> int:
        """How many heartbeats ``rank`` has sent so far."""
        return int(self.store.add(f"heartbeat/{rank}", 0))

    def start_heartbeat(self, interval_s: float | None = None) -> None:
        """Beat this rank's heartbeat every ``interval_s`` seconds (default: :data:`HEARTBEAT_S`, or a third of
        the silence limit when that is shorter) until :meth:`stop_heartbeat`."""
        if self._heartbeat is not None:
            return
        interval_s = interval_s if interval_s is not None else min(HEARTBEAT_S, silence_limit().total_seconds() / 3)
        store, key, stop = self.store, f"heartbeat/{self.ranks.rank}", self._stop

        def beat() -> None:
            while True:
                try:
                    store.add(key, 1)
                except RuntimeError:  # the store is gone (rank 0 or the launcher ended): nobody waits for us
                    return
                if stop.wait(interval_s):
                    return

        self._heartbeat = threading.Thread(target=beat, name=f"fusemycell heartbeat of {self.ranks}", daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat and wait for its thread (no thread may be inside the store when the process exits)."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=60)
        self._heartbeat = None

    def collect_from(self, rank: int, key: str, silence: timedelta | None = None) -> Any:
        """The value ``rank`` published under ``key``, waited for as long as ``rank`` keeps beating.

        Raises
        ------
        RankError
            When ``rank`` has not beaten for ``silence`` (default :func:`silence_limit`), or the store is gone.
        """
        silence = silence if silence is not None else silence_limit()
        step = timedelta(seconds=min(HEARTBEAT_S, max(silence.total_seconds() / 4, 0.1)))
        last, heard = self.beats(rank), time.monotonic()
        while True:
            with contextlib.suppress(RuntimeError):
                self.store.wait([key], step)
                return json.loads(self.store.get(key))
            try:
                now, beats = time.monotonic(), self.beats(rank)
            except RuntimeError as exc:
                raise RankError(f"{self.ranks}: the other ranks cannot be reached any more ({exc})") from exc
            if beats != last:
                last, heard = beats, now
            elif now - heard > silence.total_seconds():
                raise RankError(
                    f"{self.ranks}: rank {rank} has not been heard from for {int(now - heard)} s (killed, or its "
                    f"machine lost?); stopped waiting for it (FUSEMYCELL_RANK_SILENCE_S sets how long to wait)"
                )
