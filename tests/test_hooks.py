import types

import numpy as np

from fusemycell.hooks import MemoryMonitorHooks


def test_memory_monitor_records_a_peak_per_node():
    hooks = MemoryMonitorHooks(interval=0.01)
    small, large = types.SimpleNamespace(name="small_node"), types.SimpleNamespace(name="large_node")

    hooks.before_node_run(small)
    hooks.after_node_run(small)

    hooks.before_node_run(large)
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    hooks.after_node_run(large)
    del block

    assert set(hooks.peaks) == {"small_node", "large_node"}
    assert hooks.peaks["large_node"].peak_rss_mb >= hooks.peaks["small_node"].peak_rss_mb + 250
    assert hooks.peaks["large_node"].samples >= 2


def test_a_failing_node_is_recorded_too():
    hooks = MemoryMonitorHooks(interval=0.01)
    node = types.SimpleNamespace(name="failing")
    hooks.before_node_run(node)
    hooks.on_node_error(node)
    assert hooks.peaks["failing"].peak_rss_mb > 0


def test_interval_comes_from_the_parameters():
    hooks = MemoryMonitorHooks()
    hooks.after_context_created(types.SimpleNamespace(params={"monitor_interval": 0.25}))
    assert hooks.interval == 0.25


def test_an_unknown_environment_stops_at_once_with_the_list_of_environments(kedro_project):
    import os
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline", "simulation", "--env", "macc"],
        cwd=kedro_project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join((run.stdout + run.stderr).split())  # rich wraps long lines
    assert run.returncode != 0
    assert "UnknownEnvironmentError: environment 'macc' not found" in output
    assert "cloud, local, mac, test" in output
    assert not list((kedro_project / "data" / "01_raw").rglob("*.tif"))  # nothing ran
