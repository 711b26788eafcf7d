"""Runs stopped from outside, with real processes and signals: the report says what happened, the folder is free.

- Ctrl-C (SIGINT) or SIGTERM on ``fusemycell predict``: the report says ``interrupted`` and lists what the run
  finished, the folder's lock is gone, and the process ends as one stopped by that signal.
- SIGKILL (nothing of the run's own code runs): the next run takes over the dead run's lock and its report's
  ``previous_run`` lists the files the killed run had finished on disk.
- Two runs into one new folder: one is refused and leaves everything as it is (the folder, the other run's
  lock and report); the other completes, and its report names the refused run.

The runs predict with a tiny model on small stacks (``--env test``); each test waits for a file to appear, or
for the lock's owner, rather than for a guessed delay.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fusemycell.inference.report import report_path
from fusemycell.io import folder_lock
from tests.test_cli import SPACING_ZYX, predict_project  # noqa: F401 - the fixture, shared with the CLI's tests

pytestmark = pytest.mark.slow  # real `fusemycell predict` processes, started, stopped and killed

WAIT_S = 300  # generous: the machine may be busy; a healthy run gets there within seconds


@pytest.fixture(scope="module")
def project(request) -> Path:
    """The CLI tests' project copy with a tiny trained model at its default place, its MLflow store made."""
    project = request.getfixturevalue("predict_project")
    _create_tracking_store(project)
    return project


def _create_tracking_store(project: Path) -> None:
    """The project's MLflow store, made once: two ranks starting together would both try to create it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{(project / 'mlflow.db').as_posix()}")
    try:
        mlflow.search_experiments()
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def inputs(project) -> Path:
    """Enough single views that a run is still predicting when the test stops it after its first file."""
    from fusemycell.io.tiff import write_volume

    folder = project.parent / "inputs"
    folder.mkdir()
    for index in range(16):
        data = np.random.default_rng(index).integers(100, 4000, (24, 96, 96), dtype=np.uint16)
        write_volume(folder / f"image_{index}_membrane_angle.tif", data, SPACING_ZYX)
    return folder


def _start(project: Path, inputs: Path, out: Path, log: Path) -> subprocess.Popen:
    """``fusemycell predict INPUTS OUT --env test``, its output to ``log``."""
    command = [sys.executable, "-m", "fusemycell", "predict", str(inputs), str(out), "--env", "test"]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    with log.open("w") as handle:
        return subprocess.Popen(
            _with_default_sigint(command), cwd=project, env=environment, stdout=handle, stderr=subprocess.STDOUT
        )


#: Runs argv[1:] with SIGINT at its default, as at a terminal: a test session started in the background (nohup,
#: or `&` in a script) hands its children an ignored SIGINT, which the run rightly keeps ignored.
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def _with_default_sigint(command: list[str]) -> list[str]:
    return [sys.executable, "-c", _DEFAULT_SIGINT, *command]


def _wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"the run ended (status {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {WAIT_S} s"
        time.sleep(0.05)


def _predictions(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.tif")) if out.is_dir() else []


def _report(project: Path, out: Path) -> dict:
    return json.loads(report_path(project / "data" / "08_reporting" / "inference", out).read_text())


def _stop(project: Path, inputs: Path, out: Path, signum: int) -> tuple[subprocess.Popen, str]:
    """A run into ``out`` stopped by ``signum`` once its first prediction is on disk."""
    log = out.parent / f"{out.name}.log"
    run = _start(project, inputs, out, log)
    try:
        _wait_for(lambda: bool(_predictions(out)), run, "prediction on disk")
        run.send_signal(signum)
        run.wait(timeout=WAIT_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    return run, log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_says_interrupted_and_frees_its_folder(project, inputs, tmp_path, signum):
    out = tmp_path / f"out_{signum}"
    run, printed = _stop(project, inputs, out, signum)
    assert run.returncode != 0, f"the run finished before the signal reached it:\n{printed}"
    report = _report(project, out)
    assert report["status"] == "interrupted", printed
    assert signal.Signals(signum).name in report["reason"]
    on_disk = _predictions(out)
    assert report["written"] == on_disk and on_disk  # what it finished, every one of them complete on disk
    assert len(on_disk) < len(list(inputs.glob("*.tif")))
    assert folder_lock.read_owner(out) is None  # the next run is not blocked


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_run_ends_as_one_stopped_by_that_signal(project, inputs, tmp_path, signum):
    run, printed = _stop(project, inputs, tmp_path / f"out_{signum}", signum)
    assert "terminate called" not in printed
    assert run.returncode in (128 + signum, -signum), printed  # 130 / 143, or ended by the signal itself


def test_after_sigkill_the_next_run_says_what_the_killed_one_wrote(project, inputs, tmp_path):
    out = tmp_path / "out"
    run, printed = _stop(project, inputs, out, signal.SIGKILL)
    assert run.returncode == -signal.SIGKILL
    left = _report(project, out)
    finished = _predictions(out)
    assert left["status"] == "running" and folder_lock.read_owner(out)["pid"] == run.pid  # nothing of it ran
    again = subprocess.run(
        [sys.executable, "-m", "fusemycell", "predict", str(inputs), str(out), "--env", "test"],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr  # the dead run's lock did not block it
    report = _report(project, out)
    assert report["status"] == "complete" and len(report["written"]) == len(list(inputs.glob("*.tif")))
    previous = report["previous_run"]
    assert previous["status"] == "interrupted" and previous["process"]["pid"] == run.pid
    assert set(finished) <= set(previous["written"])  # every file complete on disk when it was killed
    assert folder_lock.read_owner(out) is None


def test_two_runs_into_one_new_folder_one_refused_the_other_complete(project, inputs, tmp_path):
    """The defect: the refused run's clean-up deleted the folder the first run was writing into, lock included."""
    out = tmp_path / "new" / "out"
    first = _start(project, inputs, out, tmp_path / "first.log")
    time.sleep(2)  # as reproduced: the second started 2 s after the first, both before the folder existed
    second = _start(project, inputs, out, tmp_path / "second.log")
    runs = {first.pid: first, second.pid: second}
    try:
        _wait_for(lambda: folder_lock.read_owner(out) is not None, first, "lock on the output folder")
        holder = runs[folder_lock.read_owner(out)["pid"]]
        other = second if holder is first else first
        holder_log = tmp_path / ("first.log" if holder is first else "second.log")
        # stopped once predicting, past its MLflow writes: a process stopped inside an SQLite write would hold
        # mlflow.db, and the other run would fail on 'database is locked' instead of the folder's lock
        _wait_for(lambda: "predicting" in holder_log.read_text(), holder, "the holder's first prediction")
        holder.send_signal(signal.SIGSTOP)  # holds the folder, mid-run, until the other has been refused
        try:
            other.wait(timeout=WAIT_S)
        finally:
            holder.send_signal(signal.SIGCONT)
        assert folder_lock.read_owner(out)["pid"] == holder.pid  # its lock, untouched
        holder.wait(timeout=WAIT_S)
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.wait()
    logs = {pid: (tmp_path / ("first.log" if run is first else "second.log")).read_text() for pid, run in runs.items()}
    assert other.returncode == 1 and "in use by another fusemycell run" in logs[other.pid], logs[other.pid]
    assert holder.returncode == 0, logs[holder.pid]
    assert _predictions(out) == sorted(p.name for p in inputs.glob("*.tif"))
    report = _report(project, out)
    assert report["status"] == "complete" and report["process"]["pid"] == holder.pid
    assert report["written"] == _predictions(out)
    assert [r["process"]["pid"] for r in report["refused_runs"]] == [other.pid]
    assert "in use by another fusemycell run" in report["refused_runs"][0]["reason"]
    assert folder_lock.read_owner(out) is None


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [entry[len(b"RANK=") :] for entry in environ if entry.startswith(b"RANK=")]
    return int(found[0]) if found else None


def _workers(launcher: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes ``torchrun`` (pid ``launcher``) started."""
    children = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True, check=False).stdout
    return {rank: pid for pid in map(int, children.split()) if (rank := _rank_of(pid)) is not None}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the ranks' processes through /proc")
def test_a_rank_killed_under_torchrun_leaves_a_report_that_says_what_was_written(project, inputs, tmp_path):
    """SIGKILL of rank 1: torchrun stops rank 0 with SIGTERM; its report says interrupted, the folder is free."""
    out, log = tmp_path / "out", tmp_path / "torchrun.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "kedro", "run"]
    command += ["--pipelines", "inference", "--env", "test"]
    command += ["--params", f"inference.input_dir={inputs},inference.output_dir={out}"]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "1"}
    with log.open("w") as handle:
        launcher = subprocess.Popen(command, cwd=project, env=environment, stdout=handle, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: bool(_predictions(out)) and 1 in _workers(launcher.pid), launcher, "prediction on disk")
        os.kill(_workers(launcher.pid)[1], signal.SIGKILL)
        launcher.wait(timeout=WAIT_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    printed = log.read_text()
    assert launcher.returncode != 0, printed
    report = _report(project, out)
    assert report["status"] == "interrupted" and report["ranks"] == 2, printed
    assert sorted(report["written"]) == _predictions(out)  # every rank's finished files, as they are on disk
    assert folder_lock.read_owner(out) is None
