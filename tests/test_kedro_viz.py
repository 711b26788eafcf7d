"""`kedro viz build` writes a static site whose JSON shows every pipeline, layer and main dataset."""

import json

import pytest

from fusemycell.pipeline_registry import PIPELINE_ORDER
from tests.conftest import run_kedro

pytestmark = pytest.mark.slow  # `kedro viz build` in a subprocess

LAYERS = ["raw", "intermediate", "model_input", "models", "model_output", "reporting"]
MAIN_DATASETS = {
    "raw_pairs",
    "normalized_volumes",
    "volume_split",
    "patch_store_train",
    "patch_store_val",
    "trained_model",
    "onnx_model",
    "test_predictions",
    "evaluation_metrics",
    "evaluation_report",
    "fingerprint_figures",
}


def test_static_site_lists_every_pipeline_layer_and_main_dataset(kedro_project):
    built = run_kedro(kedro_project, "viz", "build")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    api = kedro_project / "build" / "api"
    assert (kedro_project / "build" / "index.html").is_file()
    main = json.loads((api / "main").read_text())

    assert {p["id"] for p in main["pipelines"]} == {*PIPELINE_ORDER, "__default__"}
    # layers come out in data-flow order (kedro-viz drops them all if the layers form a cycle)
    assert main["layers"] == LAYERS
    data = {n["name"]: n for n in main["nodes"] if n["type"] == "data"}
    assert MAIN_DATASETS <= set(data)
    assert all(node["layer"] in LAYERS for node in data.values()), {
        name: node["layer"] for name, node in data.items() if node["layer"] not in LAYERS
    }
    # each pipeline is a collapsible group
    groups = {n["name"] for n in main["nodes"] if n["type"] == "modularPipeline"}
    assert set(PIPELINE_ORDER) - {"inference"} <= groups  # the main job is simulation..evaluation

    for name in PIPELINE_ORDER:
        pipeline = json.loads((api / "pipelines" / name).read_text())
        tasks = [n for n in pipeline["nodes"] if n["type"] == "task"]
        assert tasks and all(n["modular_pipelines"] == [name] for n in tasks)
        assert pipeline["layers"], f"{name}: no layers (a layer cycle?)"
