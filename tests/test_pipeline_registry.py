"""Every pipeline is registered and runnable by name, alone or with others."""

import pytest
from kedro.framework.project import configure_project

from fusemycell.pipeline_registry import DEFAULT_CHAIN, PIPELINE_ORDER, register_pipelines
from tests.conftest import run_kedro


def test_all_six_pipelines_and_the_default_chain_are_registered():
    configure_project("fusemycell")
    pipelines = register_pipelines()
    assert set(pipelines) == {*PIPELINE_ORDER, "__default__"}
    assert PIPELINE_ORDER == ("simulation", "preprocessing", "patching", "training", "evaluation", "inference")
    chain = {node.name for name in DEFAULT_CHAIN for node in pipelines[name].nodes}
    assert DEFAULT_CHAIN == ("simulation", "preprocessing", "patching", "training", "evaluation")
    assert {node.name for node in pipelines["__default__"].nodes} == chain
    assert {
        "simulation.simulate_acquisitions",
        "training.train_fusion_model",
        "evaluation.score_test_volumes",
    } <= chain
    assert all(len(pipelines[name].nodes) > 0 for name in PIPELINE_ORDER)


def test_each_pipeline_is_its_own_namespace_and_dataset_names_stay_global():
    """kedro-viz collapses each pipeline into a group; the catalog names are not prefixed."""
    configure_project("fusemycell")
    pipelines = register_pipelines()
    for name in PIPELINE_ORDER:
        assert {node.namespace for node in pipelines[name].nodes} == {name}
        assert all(node.name.startswith(f"{name}.") for node in pipelines[name].nodes)
    datasets = pipelines["__default__"].datasets()
    assert {"patch_store_train", "trained_model", "evaluation_report", "params:training"} <= datasets
    assert not any(d.startswith(tuple(f"{name}." for name in PIPELINE_ORDER)) for d in datasets)


@pytest.mark.slow
def test_cli_lists_the_pipelines_and_runs_several_by_name(kedro_project):
    listed = run_kedro(kedro_project, "registry", "list")
    assert listed.returncode == 0, listed.stderr
    for name in PIPELINE_ORDER:
        assert f"- {name}" in listed.stdout

    # --pipelines X,Y imports only the named pipelines: the registry must still resolve both
    run = run_kedro(kedro_project, "run", "--pipelines", "simulation,preprocessing", "--env", "test")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert len(list((kedro_project / "data" / "01_raw" / "synthetic").glob("*.tif"))) == 8


def test_every_node_is_named_after_its_function():
    from kedro.framework.project import configure_project

    from fusemycell.pipeline_registry import register_pipelines

    configure_project("fusemycell")
    nodes = {node for pipeline in register_pipelines().values() for node in pipeline.nodes}
    mismatched = {node.name: node.func.__name__ for node in nodes if node.name.split(".")[-1] != node.func.__name__}
    assert mismatched == {}
