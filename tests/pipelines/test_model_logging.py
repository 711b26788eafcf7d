"""Every run that trains logs the MLflow model: also the bring-your-own-data chain of the docs."""

from __future__ import annotations

import logging
import re
import shutil

import mlflow
import numpy as np
import pytest
import tifffile
from kedro.framework.project import configure_project
from kedro.pipeline import Pipeline
from kedro_mlflow.pipeline.pipeline_ml import PipelineML

from fusemycell.io.formats import read_volume
from fusemycell.pipeline_registry import register_pipelines
from tests.conftest import PROJECT_ROOT, copy_project, run_session

BYOD_CHAIN = ["preprocessing", "patching", "training", "evaluation"]


def _as_kedro_combines(pipelines: dict[str, Pipeline], names: list[str]) -> Pipeline:
    combined = Pipeline([])
    for name in names:  # what KedroSession.run does with --pipelines a,b,c
        combined += pipelines[name]
    return combined.filter()


def test_any_combination_that_contains_training_stays_a_model_logging_pipeline():
    configure_project("fusemycell")
    pipelines = register_pipelines()
    for names in (["training"], ["__default__"], BYOD_CHAIN, ["training", "evaluation"], ["patching", "training"]):
        combined = _as_kedro_combines(pipelines, names)
        assert isinstance(combined, PipelineML), names
        assert combined.input_name == "single_view_array"
        assert combined.log_model_kwargs["name"] == "fusemycell_model"
    for names in (["preprocessing", "patching"], ["evaluation"], ["inference"]):
        assert not isinstance(_as_kedro_combines(pipelines, names), PipelineML), names


def test_kedro_viz_views_of_the_main_job_are_plain_pipelines_without_a_warning(caplog):
    configure_project("fusemycell")
    main = register_pipelines()["__default__"]
    with caplog.at_level(logging.WARNING):
        part = main.only_nodes_with_namespaces(["training"])  # what kedro-viz asks, per namespace
        rest = main - part
    assert not isinstance(part, PipelineML) and not isinstance(rest, PipelineML)
    assert len(part.nodes) + len(rest.nodes) == len(main.nodes)
    assert "no longer a 'PipelineML'" not in caplog.text


@pytest.fixture(scope="module")
def own_data_project(tmp_path_factory):
    """The README's own-data chain on a folder of real-looking data (simulated, moved, one stray file)."""
    project = copy_project(tmp_path_factory.mktemp("own_data") / "project")
    import os

    previous = os.getcwd()
    os.chdir(project)
    try:
        run_session(project, ["simulation"])
        own = project / "data" / "01_raw" / "fusemycell"
        shutil.copytree(project / "data" / "01_raw" / "synthetic", own, ignore=shutil.ignore_patterns(".*"))
        tifffile.imwrite(own / "scan_notes.tif", np.zeros((2, 4, 4), np.uint16))  # not a FuseMyCell name
        logger = logging.getLogger("fusemycell.io.pairs")
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        try:
            run_session(project, BYOD_CHAIN, raw_dir=str(own))
        finally:
            logger.removeHandler(handler)
    finally:
        os.chdir(previous)
    return project, records


@pytest.mark.slow
def test_the_own_data_chain_logs_the_model_and_the_readme_uri_loads_it(own_data_project):
    project, _ = own_data_project
    mlflow.set_tracking_uri(f"sqlite:///{(project / 'mlflow.db').as_posix()}")
    runs = mlflow.search_runs(experiment_names=["fusemycell"], filter_string="tags.mlflow.runName LIKE '%training%'")
    assert len(runs) == 1
    assert runs.iloc[0]["tags.mlflow.runName"] == "preprocessing+patching+training+evaluation (env test)"
    docs = (PROJECT_ROOT / "docs" / "export.md").read_text()
    uris = set(re.findall(r"runs:/<run id>/fusemycell_model", docs))
    assert uris, "the docs name the MLflow model's URI"
    model = mlflow.pyfunc.load_model(uris.pop().replace("<run id>", runs.iloc[0]["run_id"]))
    single_view = read_volume(project / "data" / "01_raw" / "fusemycell" / "image_2_nucleus_angle.tif").data
    prediction = model.predict(single_view)
    assert prediction.shape == single_view.shape and prediction.dtype == np.uint16
    assert not np.array_equal(prediction, single_view)


@pytest.mark.slow
def test_ignored_files_are_reported_once_per_run(own_data_project):
    _, records = own_data_project
    ignored = [r for r in records if "file(s) ignored" in r.getMessage()]
    assert len(ignored) == 1, [r.getMessage() for r in ignored]
    assert "scan_notes.tif" in ignored[0].getMessage()


def test_the_private_kedro_mlflow_api_it_overrides_is_unchanged():
    """``ModelLoggingPipeline`` overrides ``PipelineML._turn_pipeline_to_ml`` (private in kedro-mlflow) and
    builds ``PipelineML`` with its constructor's keywords: pinned here, so an upgrade that changes either
    fails this test instead of silently logging no model."""
    import inspect

    turn = inspect.signature(PipelineML._turn_pipeline_to_ml)
    assert list(turn.parameters) == ["self", "pipeline"]
    # the methods that keep a part of the graph still go through it
    for method in ("from_inputs", "from_nodes", "to_nodes", "only_nodes_with_tags", "tag"):
        assert "self._turn_pipeline_to_ml(" in inspect.getsource(getattr(PipelineML, method)), method
    keywords = inspect.signature(PipelineML.__init__).parameters
    assert {"nodes", "inference", "input_name", "kpm_kwargs", "log_model_kwargs"} <= keywords.keys()
