"""The inference report: one per run and output folder, saying what the run read, wrote, skipped and why.

Where: ``<report folder>/<output folder's name>-<8 hex digits of its resolved path>.json``
(:func:`report_path`): two runs into two folders never share a report, a run into the same folder
replaces the previous one's, and a report cannot be taken for another folder's (it also names its
``output_dir``). The report folder is the catalog's ``report_dir`` of ``inference_outputs``.

Status, written atomically at each step:

- ``running``: the run holds the output folder and has not finished;
- ``complete``: every input was predicted and written; ``failed``: some input could not be (each
  failure names its file and why), or the run stopped before its first prediction (``reason``);
- ``refused``: the run never started (invalid parameters, an output folder that would overwrite
  inputs); ``nothing to write``: the run ended without anything to predict;
- ``interrupted``: the run was stopped by a signal (Ctrl-C, SIGTERM; ``reason`` names it); ``files``
  lists what it had finished;
- a report still ``running`` when the next run into its folder starts belonged to a run that was
  killed with SIGKILL (the folder's lock shows no live run): that run says so in its log and keeps the
  old report under ``previous_run``, status ``interrupted``, whose ``written`` lists the files that run
  had recorded and those it finished on disk (a rank of a shared run records only at its end).

A run refused because another one held the folder changes nothing of that run's: it leaves a note
next to the report (``<report>.refused.<pid>.<time>.json``, :func:`write_refusal_note`), and the
holder's final report lists the notes under ``refused_runs`` (who, when, why).

The run that owns the report is :class:`fusemycell.inference.run.InferenceRun`.

Every input has one entry in ``files`` (``written`` or ``failed``, with the problem); ``written``
and ``failures`` list the same by kind. ``outside_training`` (from the plan) gives
``inference.outside_training``'s ``mode``, whether the model records a training domain (``checked``)
and, for each input outside it, its one line and every property outside with the training range
(:mod:`fusemycell.inference.outside`); a refused input is also a failure. A run shared by several
processes (ranks of a launcher such as ``torchrun``) has one report, written by rank 0: ``ranks`` says
how many there were, and every entry of ``files`` names the ``rank`` that predicted it. No Kedro import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from fusemycell.io.atomic import writing_atomically

#: What a report's ``status`` can say.
STATUSES = ("running", "complete", "failed", "refused", "nothing to write", "interrupted")


def report_path(report_dir: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """The report of the runs into ``output_dir``: ``<report_dir>/<folder name>-<hash of its path>.json``."""
    folder = Path(output_dir).expanduser().resolve()
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:8]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.name) or "root"
    return Path(report_dir) / f"{name}-{digest}.json"


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _this_process() -> dict[str, Any]:
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": command}


@dataclass
class FileOutcome:
    """What became of one input: ``written`` under ``file``, or ``failed`` with the ``problem``."""

    file: str
    status: Literal["written", "failed"]
    problem: str | None = None
    rank: int | None = None
    """The process of a multi-process run that predicted it (None: a single-process run)."""


@dataclass
class InferenceReport:
    """One run into one output folder (see the module docstring); :meth:`as_json` is what is written."""

    output_dir: str
    status: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    process: dict[str, Any] = field(default_factory=_this_process)
    plan: dict[str, Any] = field(default_factory=dict)
    """What the run read: input folder, model, backend, fused targets skipped."""
    files: list[FileOutcome] = field(default_factory=list)
    reason: str | None = None
    """Why the run was refused, or failed before its first prediction."""
    previous_run: dict[str, Any] | None = None
    """The report of a run into this folder that was killed before it finished."""
    ranks: int | None = None
    """How many processes shared the run (None: one)."""
    refused_runs: list[dict[str, Any]] = field(default_factory=list)
    """Runs refused while this one held the folder (their notes, :func:`refusal_notes`)."""

    def finish(self, status: str, reason: str | None = None) -> InferenceReport:
        """Set the final status (and the reason of a run that did not predict); returns ``self``."""
        if status not in STATUSES:
            raise ValueError(f"report status {status!r}: expected one of {', '.join(STATUSES)}")
        self.status, self.finished = status, time.time()
        if reason is not None:
            self.reason = reason
        return self

    def as_json(self) -> dict[str, Any]:
        """The report as written: header, plan, per-file entries, and the written/failed lists."""
        failures = [{"file": f.file, "problem": f.problem} for f in self.files if f.status == "failed"]
        if self.reason is not None:
            failures.insert(0, {"file": None, "problem": self.reason})
        content: dict[str, Any] = {
            "status": self.status,
            "output_dir": self.output_dir,
            "started": _when(self.started),
            "started_unix": round(self.started, 3),
            "finished": _when(self.finished),
            "process": self.process,
            **({"ranks": self.ranks} if self.ranks is not None else {}),
            **self.plan,
            "reason": self.reason,
            "files": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.files],
            "written": [f.file for f in self.files if f.status == "written"],
            "failures": failures,
        }
        if self.previous_run is not None:
            content["previous_run"] = self.previous_run
        if self.refused_runs:
            content["refused_runs"] = self.refused_runs
        return content

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report atomically (a reader never sees half of it)."""
        path = Path(path)
        with writing_atomically(path) as temporary:
            temporary.write_text(json.dumps(self.as_json(), indent=2, default=str))
        return path


def read_report(path: str | os.PathLike) -> dict[str, Any] | None:
    """A report as written, or None when there is none (or it cannot be read)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def interrupted(previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """``previous`` as an interrupted run's summary when it was left ``running``, else None.

    Call it only while holding the output folder's lock: no live run can then be writing it.
    """
    if not previous or previous.get("status") != "running":
        return None
    return {
        "status": "interrupted",
        "started": previous.get("started"),
        "started_unix": previous.get("started_unix"),
        "process": previous.get("process"),
        "written": previous.get("written", []),
    }


def _notes(report_file: Path) -> list[Path]:
    """The refusal notes next to ``report_file``, oldest first (their names end in the time they were written)."""

    def written(note: Path) -> int:
        stamp = note.name.rsplit(".", 2)[-2]
        return int(stamp) if stamp.isdigit() else 0

    return sorted(report_file.parent.glob(f"{report_file.stem}.refused.*.json"), key=written)


def write_refusal_note(report_file: str | os.PathLike, process: dict[str, Any], reason: str) -> Path:
    """Note, next to ``report_file``, that a run (``process``) was refused for ``reason``; returns the note.

    The note is the refused run's own file: the report of the run that holds the folder is not touched.
    """
    report_file = Path(report_file)
    note = report_file.parent / f"{report_file.stem}.refused.{os.getpid()}.{time.time_ns()}.json"
    record = {"refused": _when(time.time()), "process": process, "reason": reason}
    with writing_atomically(note) as temporary:
        temporary.write_text(json.dumps(record, indent=2, default=str))
    return note


def refusal_notes(report_file: str | os.PathLike, *, consume: bool = False) -> list[dict[str, Any]]:
    """The notes of runs refused into the folder of ``report_file``, oldest first; ``consume``: then remove them
    (the run that holds the folder does, once its report lists them)."""
    notes = []
    for path in _notes(Path(report_file)):
        content = read_report(path)
        if content is not None:
            notes.append(content)
        if consume:
            with contextlib.suppress(OSError):
                path.unlink()
    return notes
