"""Project pipelines.

Every pipeline is imported explicitly (not through ``find_pipelines``): with
``kedro run --pipelines X`` Kedro asks ``find_pipelines`` for ``X`` alone, so a
composite built from its result would miss the others. Importing them here
makes ``--pipeline X``, ``--pipelines X,Y`` and ``__default__`` all work.
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from fusemycell.pipelines import evaluation, inference, patching, preprocessing, simulation, training
from fusemycell.pipelines.inference.pipeline import create_model_pipeline
from fusemycell.pipelines.model_logging import ModelLoggingPipeline

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
    # every run that trains (`training` alone, the main job, `preprocessing,patching,training,...`)
    # ends by logging the inference pipeline as an MLflow pyfunc model:
    # mlflow.pyfunc.load_model("runs:/<id>/fusemycell_model").predict(volume) applies the trained network
    pipelines["training"] = _packaged(pipelines["training"])
    pipelines["__default__"] = sum((pipelines[name] for name in DEFAULT_CHAIN), Pipeline([]))
    return pipelines


def _packaged(training_pipeline: Pipeline) -> Pipeline:
    return ModelLoggingPipeline.wrap(
        training=training_pipeline,
        inference=create_model_pipeline(),
        input_name="single_view_array",
        log_model_kwargs={"name": "fusemycell_model", "signature": None},  # volumes of any shape
    )
