"""fusemycell.io.folder_lock: one writer per folder, re-entrant in a process, stale locks taken over."""

import json
import os
import socket

import pytest

from fusemycell.io import folder_lock


def test_the_lock_is_reentrant_and_gone_after_the_last_release(tmp_path):
    folder = tmp_path / "out"
    folder_lock.acquire(folder)
    folder_lock.acquire(folder)
    owner = folder_lock.read_owner(folder)
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    folder_lock.release(folder)
    assert folder_lock.holds(folder) and (folder / folder_lock.LOCK_NAME).exists()
    folder_lock.release(folder)
    assert not folder_lock.holds(folder) and folder_lock.read_owner(folder) is None


def test_a_live_owner_refuses_with_its_pid_and_command(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    record = {"pid": 1, "host": socket.gethostname(), "started": 0, "command": "kedro run --pipelines inference"}
    (folder / folder_lock.LOCK_NAME).write_text(json.dumps(record))  # pid 1 is alive
    with pytest.raises(
        folder_lock.FolderBusyError, match=r"in use by another fusemycell run \(process 1 .*inference\)"
    ):
        folder_lock.acquire(folder)
    assert json.loads((folder / folder_lock.LOCK_NAME).read_text()) == record  # not touched


def test_a_lock_of_another_machine_is_never_taken_over(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    record = {"pid": 999999, "host": "another-host", "started": 0, "command": "kedro run"}
    (folder / folder_lock.LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(folder_lock.FolderBusyError, match="another-host"):
        folder_lock.acquire(folder)


def test_a_dead_owner_on_this_machine_is_stale(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    (folder / folder_lock.LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))
    with folder_lock.locked(folder):
        assert folder_lock.read_owner(folder)["pid"] == os.getpid()
    assert folder_lock.read_owner(folder) is None
