"""The registry: every pipeline runnable by name, in data-flow order, the main job self-contained."""

import pytest
from kedro.framework.project import configure_project

from fusemycell.pipeline_registry import DEFAULT_CHAIN, PIPELINE_ORDER, register_pipelines
from tests.conftest import run_kedro


@pytest.fixture(scope="module")
def pipelines():
    configure_project("fusemycell")
    return register_pipelines()


def test_the_default_pipeline_is_the_main_chain(pipelines):
    assert set(pipelines) == {*PIPELINE_ORDER, "__default__"}
    chain = {node.name for name in DEFAULT_CHAIN for node in pipelines[name].nodes}
    assert {node.name for node in pipelines["__default__"].nodes} == chain
    assert all(pipelines[name].nodes for name in PIPELINE_ORDER)


def test_the_main_job_needs_nothing_but_its_parameters(pipelines):
    """`kedro run` on a fresh clone: the simulation makes the raw data, every other input is made upstream."""
    assert all(name.startswith("params:") for name in pipelines["__default__"].inputs())


def test_pipelines_are_listed_in_data_flow_order(pipelines):
    """No pipeline reads what a later one writes (run planning and the hint commands rely on this order)."""
    for index, name in enumerate(PIPELINE_ORDER):
        later = set().union(*(pipelines[other].all_outputs() for other in PIPELINE_ORDER[index + 1 :]))
        assert not pipelines[name].inputs() & later, name


def test_inference_applies_what_the_main_job_trains(pipelines):
    """Inference is run on its own, on the model file training writes (the same catalog file by default)."""
    assert "inference" not in DEFAULT_CHAIN
    from kedro.config import OmegaConfigLoader

    from tests.conftest import PROJECT_ROOT

    catalog = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")["catalog"]
    assert catalog["inference_model"]["filepath"] == catalog["trained_model"]["dataset"]["filepath"]
    assert "inference_model" in pipelines["inference"].inputs()
    assert "trained_model" in pipelines["__default__"].all_outputs()


def test_each_pipeline_is_its_own_namespace_and_dataset_names_stay_global(pipelines):
    """kedro-viz collapses each pipeline into a group; the catalog names are not prefixed."""
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


def test_every_node_is_named_after_its_function(pipelines):
    nodes = {node for pipeline in pipelines.values() for node in pipeline.nodes}
    mismatched = {node.name: node.func.__name__ for node in nodes if node.name.split(".")[-1] != node.func.__name__}
    assert mismatched == {}
