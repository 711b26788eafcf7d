"""Inference shared by the ranks of a launcher: two CPU processes, as ``torchrun --nproc-per-node 2`` starts them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fusemycell.io.formats import read_info
from tests.conftest import inference_report


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(project: Path, inputs: Path, output: Path, world_size: int) -> list[subprocess.CompletedProcess]:
    """``kedro run --pipelines inference`` once per rank, with the variables torchrun sets."""
    port = str(_free_port())
    processes = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "KEDRO_DISABLE_TELEMETRY": "1",
            "DO_NOT_TRACK": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        command = [sys.executable, "-m", "kedro", "run", "--pipelines", "inference", "--env", "test"]
        command += ["--params", f"inference.input_dir={inputs},inference.output_dir={output}"]
        processes.append(
            subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    results = []
    for process in processes:
        out, _ = process.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, ""))
    return results


@pytest.mark.slow
def test_two_ranks_share_the_files_and_write_one_report(evaluated_project, tmp_path):
    inputs = tmp_path / "views"
    inputs.mkdir()
    views = sorted((evaluated_project / "data" / "01_raw" / "synthetic").glob("*_angle.tif"))[:3]
    assert len(views) == 3
    for view in views:
        shutil.copy(view, inputs / view.name)
    output = tmp_path / "predictions"

    runs = _launch(evaluated_project, inputs, output, world_size=2)

    for rank, run in enumerate(runs):
        assert run.returncode == 0, f"rank {rank}:\n{run.stdout[-3000:]}"
    report = inference_report(evaluated_project, output)
    assert report["status"] == "complete"
    assert report["ranks"] == 2
    files = report["files"]
    # every file exactly once, each with the rank that wrote it, and both ranks did work
    assert sorted(entry["file"] for entry in files) == [view.name for view in views]
    assert all(entry["status"] == "written" for entry in files)
    assert {entry["rank"] for entry in files} == {0, 1}
    for view in views:
        written, source = read_info(output / view.name), read_info(view)
        assert written.shape == source.shape and written.dtype == source.dtype
