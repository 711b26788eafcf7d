"""The parameter hook: every parameter validated once, and the nodes receive the typed, resolved result."""

from __future__ import annotations

import types

import pytest
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.framework.project import configure_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from kedro.validation import TypeExtractor

from fusemycell.hooks import ParameterHooks
from fusemycell.parameters import ParameterError, Validated
from fusemycell.training.config import TrainingConfig
from tests.conftest import PROJECT_ROOT


def _context(project, params):
    loader = types.SimpleNamespace(
        conf_source=str(PROJECT_ROOT / "conf"), base_env="base", env="test", runtime_params={}
    )
    return types.SimpleNamespace(config_loader=loader, params=params, project_path=project)


def test_nodes_receive_the_typed_group_with_its_locations_resolved(tmp_path):
    hooks = ParameterHooks()
    hooks.after_context_created(_context(tmp_path, {"training": {"epochs": 3, "checkpoint_dir": "ckpt"}}))
    received = {}

    def train(training: Validated[TrainingConfig], epochs: int) -> int:
        received["training"], received["epochs"] = training, epochs
        return 0

    manager = _create_hook_manager()
    manager.register(hooks)
    catalog = DataCatalog(
        {
            "params:training": MemoryDataset({"epochs": 3, "checkpoint_dir": "ckpt"}),  # as Kedro puts it there
            "params:training.epochs": MemoryDataset(3),
        }
    )
    pipeline = Pipeline([Node(train, ["params:training", "params:training.epochs"], "done", name="train")])
    SequentialRunner().run(pipeline, catalog, manager)
    assert isinstance(received["training"], TrainingConfig) and received["training"].epochs == 3
    assert received["training"].checkpoint_dir == str((tmp_path / "ckpt").resolve())  # one place decides
    assert received["epochs"] == 3  # a nested parameter: its typed value too
    assert catalog.load("params:training") == {"epochs": 3, "checkpoint_dir": "ckpt"}  # what kedro-mlflow logs


def test_invalid_parameters_stop_the_run_before_its_first_node(tmp_path):
    hooks = ParameterHooks()
    hooks.after_context_created(_context(tmp_path, {"training": {"epochs": 0}, "inference": {"overlapp": 0.2}}))
    assert hooks.parameters is None
    pipeline = Pipeline([Node(lambda: 0, None, "x", name="anything")])
    with pytest.raises(ParameterError, match=r"(?s)training\.epochs = 0.*did you mean 'inference\.overlap'"):
        hooks.before_pipeline_run(pipeline)
    assert hooks.before_node_run(types.SimpleNamespace(name="anything"), {"params:training": {}}) is None


def test_kedro_itself_validates_no_node_parameter():
    """Kedro 1.7 would instantiate a pydantic-annotated ``params:`` input a second time; Validated[...] opts out."""
    configure_project("fusemycell")
    from fusemycell.pipeline_registry import register_pipelines

    assert TypeExtractor(register_pipelines()).extract_types_from_pipelines() == {}
    with pytest.raises(TypeError, match="annotation"):
        Validated()


def test_the_inference_run_is_built_from_the_validated_folder_and_the_catalogs_report_dir(tmp_path):
    """The hooks reach the run through the parameters' folder and the catalog's configuration, not a dataset."""
    import yaml

    from fusemycell.inference.report import report_path

    hooks = ParameterHooks()
    hooks.after_context_created(_context(tmp_path, {"inference": {"output_dir": "predictions"}}))
    entry = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())["inference_outputs"]
    hooks.after_catalog_created(DataCatalog(), {"inference_outputs": {**entry, "path": str(tmp_path / entry["path"])}})
    run = hooks.new_inference_run()
    report_dir = tmp_path / entry["report_dir"]
    assert run.folder == (tmp_path / "predictions").resolve()
    assert run.report_file == report_path(report_dir, tmp_path / "predictions")
    assert hooks.writes_predictions(Pipeline([Node(lambda x: x, "a", "inference_outputs")]))
    assert not hooks.writes_predictions(Pipeline([Node(lambda x: x, "a", "test_predictions")]))
