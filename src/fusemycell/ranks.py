"""The processes of one run started by a launcher (``torchrun``, SLURM): who is who, and what each one does.

A launcher that starts several copies of ``kedro run`` sets ``RANK`` and ``WORLD_SIZE`` (and
``MASTER_ADDR``/``MASTER_PORT``) in each. :class:`Ranks` reads them; :meth:`Ranks.share` deals a
sorted list of names out, rank ``r`` taking every ``WORLD_SIZE``-th from the ``r``-th, so every name
goes to exactly one rank and every rank agrees without talking. :class:`RankStore` is how the ranks
of one run tell each other small things (rank 0 took the output folder; what each rank wrote): a
key-value store reached through PyTorch's ``env://`` rendezvous, the one ``torchrun`` provides, with
no process group (a training node of the same run may start its own). No Kedro import.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

#: How long a rank waits for rank 0 to take the output folder.
START_TIMEOUT = timedelta(minutes=10)
#: How long rank 0 waits for the other ranks' results (a share of a large run may take hours).
FINISH_TIMEOUT = timedelta(days=2)


class RankError(RuntimeError):
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
        """Make ``value`` (JSON) known to every rank under ``key``."""
        self.store.set(key, json.dumps(value, default=str))

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
