"""Project pipelines.

Every pipeline is imported explicitly (not through ``find_pipelines``): with
``kedro run --pipelines X`` Kedro asks ``find_pipelines`` for ``X`` alone, so a
composite built from its result would miss the others. Importing them here
makes ``--pipeline X``, ``--pipelines X,Y`` and ``__default__`` all work.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline
from kedro_mlflow.pipeline import pipeline_ml_factory

from fusemycell.pipelines import evaluation, inference, patching, preprocessing, simulation, training
from fusemycell.pipelines.inference.pipeline import create_model_pipeline

#: Pipelines in data-flow order.
PIPELINE_ORDER = ("simulation", "preprocessing", "patching", "training", "evaluation", "inference")

#: The main job, ``kedro run``: simulation to evaluation. Inference is the deployment step: it is
#: run on its own, on a folder the user names (``--params inference.input_dir=...``).
DEFAULT_CHAIN = PIPELINE_ORDER[:-1]


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; ``__default__`` is the main job.
    """
    modules = {
        "simulation": simulation,
        "preprocessing": preprocessing,
        "patching": patching,
        "training": training,
        "evaluation": evaluation,
        "inference": inference,
    }
    pipelines = {name: modules[name].create_pipeline() for name in PIPELINE_ORDER}
    default = sum((pipelines[name] for name in DEFAULT_CHAIN), Pipeline([]))
    # a run of `training` (or of the main job) ends by logging the inference pipeline as an MLflow
    # pyfunc model: mlflow.pyfunc.load_model(...).predict(volume) applies the trained network
    pipelines["training"] = _packaged(pipelines["training"])
    pipelines["__default__"] = _packaged(default)
    return pipelines


def _packaged(training_pipeline: Pipeline) -> Pipeline:
    return pipeline_ml_factory(
        training=training_pipeline,
        inference=create_model_pipeline(),
        input_name="single_view_array",
        log_model_kwargs={"name": "fusemycell_model", "signature": None},  # volumes of any shape
    )
