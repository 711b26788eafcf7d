import time
import types

import numpy as np
import pytest
import torch

from fusemycell.hooks import MemoryMonitorHooks
from tests.conftest import run_kedro


def _sampled(sampler, times: int = 2) -> None:
    """Wait (10 s at most) until the node's sampling thread has taken ``times`` more samples."""
    target = sampler.peak.samples + times
    deadline = time.monotonic() + 10
    while sampler.peak.samples < target and time.monotonic() < deadline:
        time.sleep(0.005)


def test_memory_monitor_records_a_peak_per_node():
    hooks = MemoryMonitorHooks(interval=0.01)
    small, large = types.SimpleNamespace(name="small_node"), types.SimpleNamespace(name="large_node")

    hooks.before_node_run(small)
    hooks.after_node_run(small)

    hooks.before_node_run(large)
    block = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    _sampled(hooks._samplers["large_node"])
    del block  # freed before the node ends: only the sampling thread can have seen it
    hooks.after_node_run(large)

    assert set(hooks.peaks) == {"small_node", "large_node"}
    assert hooks.peaks["large_node"].peak_rss_mb >= hooks.peaks["small_node"].peak_rss_mb + 250
    assert hooks.peaks["large_node"].samples >= 4  # the first, two by the thread, the last


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


@pytest.mark.slow
def test_an_unknown_environment_stops_at_once_with_the_list_of_environments(kedro_project):
    run = run_kedro(kedro_project, "run", "--pipelines", "simulation", "--env", "macc")
    output = " ".join((run.stdout + run.stderr).split())  # rich wraps long lines
    assert run.returncode != 0
    assert "Error: environment 'macc' not found" in output and "Traceback" not in output
    assert "Environments of this project: cloud, local, mac, test " in output
    assert not list((kedro_project / "data" / "01_raw").rglob("*.tif"))  # nothing ran


def test_run_summary_says_where_things_are_and_how_the_model_compares(tmp_path, monkeypatch, capsys):
    import pandas as pd
    from kedro.io import DataCatalog
    from kedro.pipeline import Node, Pipeline

    from fusemycell.datasets.atomic import CSVDataset
    from fusemycell.hooks import RunSummaryHooks

    monkeypatch.chdir(tmp_path)
    by_channel = CSVDataset(filepath=str(tmp_path / "data" / "08_reporting" / "by_channel.csv"))
    by_channel.save(
        pd.DataFrame(
            {
                "channel": ["membrane", "membrane", "membrane", "nucleus", "nucleus", "nucleus"],
                "method": ["model", "gaussian_blur", "identity"] * 2,
                "n_ssim": [0.43, 0.12, 0.0, 0.54, 0.11, 0.0],
            }
        )
    )
    catalog = DataCatalog({"evaluation_by_channel": by_channel})
    pipeline = Pipeline([Node(lambda: None, None, "evaluation_by_channel", name="summarise")])
    RunSummaryHooks().after_pipeline_run({}, pipeline, catalog)
    out = capsys.readouterr().out
    assert "metrics per channel:" in out and "data/08_reporting/by_channel.csv" in out  # relative to the project
    assert "membrane            0.430 | 0.120 | 0.000" in out
    assert "nucleus             0.540 | 0.110 | 0.000" in out


def test_run_summary_lists_only_what_the_run_produced(tmp_path, capsys):
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline

    from fusemycell.hooks import RunSummaryHooks

    pipeline = Pipeline([Node(lambda: 1, None, "something_else", name="other")])
    RunSummaryHooks().after_pipeline_run({}, pipeline, DataCatalog({"something_else": MemoryDataset()}))
    assert "model:" not in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the cloud env is valid here")
@pytest.mark.slow
def test_a_cuda_training_env_without_a_gpu_stops_before_any_node_runs(kedro_project):
    run = run_kedro(kedro_project, "run", "--env", "cloud")
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0
    assert "Error: training.device is 'cuda' but no CUDA GPU is visible" in output and "Traceback" not in output
    assert "--env mac" in output
    assert not list((kedro_project / "data" / "01_raw").rglob("*.tif"))  # simulation never ran


class _AllocatingSave:
    """A dataset whose ``save`` does the heavy work, as the lazy plans' datasets do: 300 MB, touched."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.hooks = None

    def save(self, data):
        block = np.ones(300 * 2**20 // 8)
        _sampled(self.hooks._samplers["write_plan"])  # a few samples while it is held
        del block
        if self.fail:
            raise OSError("disk full")


def _run_with_monitor(save_dataset):
    from kedro.framework.hooks.manager import _create_hook_manager
    from kedro.io import AbstractDataset, DataCatalog, MemoryDataset
    from kedro.pipeline import Node, Pipeline
    from kedro.runner import SequentialRunner

    class Allocating(AbstractDataset):
        def _load(self):
            return None

        def _save(self, data):
            save_dataset.save(data)

        def _describe(self):
            return {}

    hooks = MemoryMonitorHooks(interval=0.01)
    save_dataset.hooks = hooks
    manager = _create_hook_manager()
    manager.register(hooks)
    pipeline = Pipeline(
        [
            Node(lambda: "a lazy plan", None, "planned", name="plan_something"),
            Node(lambda planned: planned, "planned", "written", name="write_plan"),
        ]
    )
    catalog = DataCatalog({"planned": MemoryDataset(), "written": Allocating()})
    error = None
    try:
        SequentialRunner().run(pipeline, catalog, manager)
    except Exception as exc:  # noqa: BLE001 - the failing save is the case under test
        error = exc
        # what KedroSession.run does with a failed run (the runner alone does not call it)
        manager.hook.on_pipeline_error(error=exc, run_params={}, pipeline=pipeline, catalog=catalog)
    return hooks, error


def test_the_memory_monitor_covers_the_save_of_a_nodes_outputs():
    hooks, error = _run_with_monitor(_AllocatingSave())
    assert error is None
    # the node itself allocates nothing; its output's save allocates 300 MB: the peak includes it
    assert hooks.peaks["write_plan"].peak_rss_mb >= hooks.peaks["plan_something"].peak_rss_mb + 250
    assert not hooks._samplers  # every sampler stopped


def test_a_failing_save_is_recorded_and_named(caplog):
    with caplog.at_level("ERROR", logger="fusemycell.hooks"):
        hooks, error = _run_with_monitor(_AllocatingSave(fail=True))
    assert error is not None and "disk full" in str(error)
    assert hooks.peaks["write_plan"].peak_rss_mb >= hooks.peaks["plan_something"].peak_rss_mb + 250
    assert "write_plan failed while saving written" in caplog.text
    assert not hooks._samplers


def test_the_peaks_are_one_table_at_the_end_of_the_run_not_a_line_per_node(capsys, caplog):
    hooks = MemoryMonitorHooks(interval=0.01)
    hooks.before_pipeline_run()
    with caplog.at_level("INFO"):
        for name, megabytes in (("simulation.simulate", 0), ("training.train", 300)):
            node = types.SimpleNamespace(name=name)
            hooks.before_node_run(node)
            block = np.ones(megabytes * 2**20 // 8)
            hooks.after_node_run(node)
            del block
    assert "peaked" not in caplog.text  # nothing logged per node
    hooks.after_pipeline_run()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("memory peaks") and "RSS MB" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["simulation.simulate", "training.train"]  # the order they ran
    assert lines[3].endswith("<- largest") and not lines[2].endswith("<- largest")
    assert all(len(line) < 80 for line in lines)
