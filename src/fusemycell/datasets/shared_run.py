"""One output folder written by all the ranks of a run: rank 0 takes it, every rank writes its share,
rank 0 writes the one report.

- Start: rank 0 takes the folder's lock (and clears what killed runs left); the other ranks wait for
  it and fail with its message when it could not. The lock is the run's: only rank 0 holds it, the
  other ranks write under it.
- Finish: every rank publishes what became of its files (or why it stopped); rank 0 waits for all of
  them, and only then writes the report and gives the folder back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kedro.io.core import DatasetError

from fusemycell.inference.report import FileOutcome
from fusemycell.ranks import FINISH_TIMEOUT, RankError, Ranks, RankStore

#: Runs into each folder made by this process: the ranks of a run make them in the same order.
_RUNS: dict[str, int] = {}


def _prefix(folder: Path) -> str:
    key = hashlib.sha256(str(folder.expanduser().resolve()).encode("utf-8")).hexdigest()[:16]
    _RUNS[key] = _RUNS.get(key, 0) + 1
    return f"fusemycell/outputs/{key}/{_RUNS[key]}/"


class SharedRun:
    """The ranks of one run writing the folder ``folder`` (see the module docstring)."""

    def __init__(self, ranks: Ranks, folder: Path) -> None:
        self.ranks = ranks
        self.folder = folder
        self._store: RankStore | None = None
        self.published = False

    def start(self, take: Callable[[], None]) -> None:
        """Rank 0 calls ``take`` (lock the folder, start the report); the others wait for it to have done so."""
        try:
            self._store = RankStore.connect(self.ranks, _prefix(self.folder))
        except RankError as exc:
            raise DatasetError(f"{self.folder}: {exc}") from exc
        if self.ranks.lead:
            try:
                take()
            except Exception as exc:
                self._store.publish("start", {"error": str(exc)})
                raise
            self._store.publish("start", {"error": None})
            return
        try:
            problem = self._store.collect("start")["error"]
        except RankError as exc:
            raise DatasetError(f"{self.folder}: {exc}") from exc
        if problem:
            raise DatasetError(f"{self.folder}: rank 0 could not start the run: {problem}")

    def finish(self, outcomes: list[FileOutcome], error: BaseException | None = None) -> list[dict[str, Any]] | None:
        """Publish this rank's outcomes (or its error); on rank 0, every rank's, once all have finished.

        Returns, on rank 0, one ``{"rank", "files", "error"}`` record per rank; None on the others.
        """
        if self._store is None:
            return None
        if not self.published:
            self.published = True
            record = {
                "rank": self.ranks.rank,
                "files": [{"file": o.file, "status": o.status, "problem": o.problem} for o in outcomes],
                "error": str(error) if error is not None else None,
            }
            self._store.publish(f"finished/{self.ranks.rank}", record)
        if not self.ranks.lead:
            return None
        try:
            return [self._store.collect(f"finished/{rank}", FINISH_TIMEOUT) for rank in range(self.ranks.world_size)]
        except RankError as exc:
            raise DatasetError(f"{self.folder}: {exc}") from exc


def merged_outcomes(records: list[dict[str, Any]]) -> tuple[list[FileOutcome], list[str]]:
    """Every rank's files, each with its rank (sorted by file name), and the errors that stopped a rank."""
    files = [
        FileOutcome(entry["file"], entry["status"], entry.get("problem"), record["rank"])
        for record in records
        for entry in record["files"]
    ]
    stopped = [f"rank {record['rank']}: {record['error']}" for record in records if record.get("error")]
    return sorted(files, key=lambda outcome: outcome.file), stopped
