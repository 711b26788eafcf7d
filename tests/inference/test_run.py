"""fusemycell.inference.run: one run's lock, report and ranks; a refused run changes nothing of another's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusemycell.inference.report import FileOutcome, report_path
from fusemycell.inference.run import InferenceRun, Interrupted, active_run, files_on_disk
from fusemycell.io import folder_lock

WAIT_S = 120  # generous: a healthy child gets there within seconds


def _report(reports: Path, out: Path) -> dict:
    return json.loads(report_path(reports, out).read_text())


def _child(script: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_run_holds_its_folder_from_start_to_finish(tmp_path):
    out, reports = tmp_path / "new" / "out", tmp_path / "reports"
    run = InferenceRun(out, report_dir=reports).start()
    try:
        assert active_run(out) is run and folder_lock.read_owner(out)["pid"] == os.getpid()
        assert _report(reports, out)["status"] == "running"
        run.record(FileOutcome("a.tif", "written"))
        assert _report(reports, out)["written"] == ["a.tif"]  # listed at once: a killed run's report says so
        assert run.end_save() == []
    finally:
        run.finish()
    assert _report(reports, out)["status"] == "complete"
    assert active_run(out) is None and folder_lock.read_owner(out) is None


def test_a_run_that_predicted_nothing_says_so(tmp_path):
    run = InferenceRun(tmp_path / "out", report_dir=tmp_path / "reports").start()
    run.finish()
    assert _report(tmp_path / "reports", tmp_path / "out")["status"] == "nothing to write"


def test_a_failed_run_removes_only_the_empty_folders_it_made(tmp_path):
    (tmp_path / "there").mkdir()
    out = tmp_path / "there" / "made" / "deeper"
    run = InferenceRun(out, report_dir=tmp_path / "reports").start()
    run.finish(RuntimeError("boom"))
    assert not (tmp_path / "there" / "made").exists() and (tmp_path / "there").is_dir()
    report = _report(tmp_path / "reports", out)
    assert report["status"] == "failed" and "before any prediction: boom" in report["reason"]


def test_remove_empty_never_deletes_what_a_folder_holds(tmp_path):
    made = folder_lock.make_folders(tmp_path / "a" / "b")
    assert made == [tmp_path / "a" / "b", tmp_path / "a"]
    assert folder_lock.make_folders(tmp_path / "a" / "b") == []  # there already: not this call's
    (tmp_path / "a" / "b" / folder_lock.LOCK_NAME).write_text("{}")  # another run's lock, say
    folder_lock.remove_empty(made)
    assert (tmp_path / "a" / "b" / folder_lock.LOCK_NAME).exists()


_HOLD = """
import sys, time
from fusemycell.inference.run import InferenceRun
run = InferenceRun(sys.argv[1], report_dir=sys.argv[2]).start()
print("started", flush=True)
sys.stdin.readline()
run.finish()
print("finished", flush=True)
"""


def test_a_refused_run_leaves_the_holders_folder_lock_and_report_and_is_named_in_its_report(tmp_path):
    out, reports = tmp_path / "new" / "out", tmp_path / "reports"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out), str(reports)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "started"
        lock, report = (out / folder_lock.LOCK_NAME).read_text(), report_path(reports, out).read_text()
        busy = rf"in use by another fusemycell run \(process {holder.pid}"
        with pytest.raises(folder_lock.FolderBusyError, match=busy):
            InferenceRun(out, report_dir=reports).start()
        assert (out / folder_lock.LOCK_NAME).read_text() == lock and report_path(reports, out).read_text() == report
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "finished"
    finally:
        holder.kill()
        holder.wait()
    finished = _report(reports, out)
    assert finished["process"]["pid"] == holder.pid
    assert [r["process"]["pid"] for r in finished["refused_runs"]] == [os.getpid()]
    assert "in use by another fusemycell run" in finished["refused_runs"][0]["reason"]
    assert not list(reports.glob("*.refused.*"))  # the notes are in the report now


def test_sigterm_raises_interrupted_and_the_report_says_so(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    run = InferenceRun(tmp_path / "out", report_dir=tmp_path / "reports").start()
    run.record(FileOutcome("a.tif", "written"))
    with pytest.raises(Interrupted) as raised:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in this thread at once
    assert raised.value.exit_status == 143 and isinstance(raised.value, KeyboardInterrupt)
    run.finish(raised.value)
    report = _report(tmp_path / "reports", tmp_path / "out")
    assert report["status"] == "interrupted" and "SIGTERM" in report["reason"] and report["written"] == ["a.tif"]
    assert signal.getsignal(signal.SIGTERM) == before and folder_lock.read_owner(tmp_path / "out") is None


def test_files_on_disk_are_the_visible_names_changed_since(tmp_path):
    (tmp_path / "old.tif").write_bytes(b"")
    os.utime(tmp_path / "old.tif", (1_000_000, 1_000_000))
    (tmp_path / "new.tif").write_bytes(b"")
    (tmp_path / ".new.tif.0123abcd.partial").write_bytes(b"")
    assert files_on_disk(tmp_path, time.time() - 60) == ["new.tif"]
    assert files_on_disk(tmp_path, time.time() - 60, only="old.tif") == []


_RANK = """
import sys, time
from pathlib import Path
from fusemycell.inference.report import FileOutcome
from fusemycell.inference.run import InferenceRun, RunStartError
run = InferenceRun(sys.argv[1], report_dir=sys.argv[2]).start()
if run.ranks.rank == 1:
    Path(sys.argv[3]).touch()
    time.sleep(600)
run.record(FileOutcome("a.tif", "written"))
try:
    run.end_save()
except RunStartError as error:
    print(error, flush=True)
    run.finish(error)
    sys.exit(3)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_ranks_started_by_hand_stop_waiting_for_a_killed_rank(tmp_path):
    out, reports, marker = tmp_path / "out", tmp_path / "reports", tmp_path / "rank1_started"
    launcher = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    launcher["FUSEMYCELL_RANK_SILENCE_S"] = "3"  # the default is minutes
    ranks = [_child(_RANK, str(out), str(reports), str(marker), RANK=str(r), **launcher) for r in (0, 1)]
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            assert ranks[1].poll() is None and time.monotonic() < deadline, ranks[1].stdout.read()
            time.sleep(0.05)
        ranks[1].send_signal(signal.SIGKILL)
        printed, _ = ranks[0].communicate(timeout=WAIT_S)  # minutes at most, not days
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
            rank.wait()
    assert ranks[0].returncode == 3 and "rank 1 has not been heard from" in printed, printed
    report = _report(reports, out)
    assert report["status"] == "failed" and "rank 1 has not been heard from" in report["reason"]
    assert report["ranks"] == 2 and folder_lock.read_owner(out) is None
