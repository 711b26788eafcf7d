"""A training pipeline that stays a kedro-mlflow ``PipelineML`` when Kedro combines it with others.

kedro-mlflow logs the MLflow pyfunc model only when the pipeline that ran *is* a ``PipelineML``.
``kedro run --pipelines preprocessing,patching,training,evaluation`` adds the registered
pipelines one by one (``Pipeline([]) + preprocessing + ... + training + ...``), and kedro-mlflow's
``PipelineML.__add__``/``__radd__`` return a plain ``Pipeline`` (with a warning): the run trained a
model but logged none. :class:`ModelLoggingPipeline` keeps any sum that contains the training
nodes a ``PipelineML``, so every run that trains logs ``fusemycell_model``.

Operations that keep only a part of the graph (kedro-viz asks each namespace for its nodes and
subtracts them, twelve times for the main job) return a plain ``Pipeline`` without kedro-mlflow's
"no longer a PipelineML" warning: no model is logged from those views, and nobody needs telling.
"""

from __future__ import annotations

from typing import Any

from kedro.pipeline import Pipeline
from kedro_mlflow.pipeline.pipeline_ml import KedroMlflowPipelineMLError, PipelineML


class ModelLoggingPipeline(PipelineML):
    """A ``PipelineML`` whose sums with other pipelines are ``PipelineML`` again."""

    @classmethod
    def wrap(
        cls, training: Pipeline, inference: Pipeline, input_name: str, log_model_kwargs: dict[str, Any]
    ) -> ModelLoggingPipeline:
        """``training`` packaged with ``inference`` (what ``pipeline_ml_factory`` builds)."""
        return cls(nodes=training.nodes, inference=inference, input_name=input_name, log_model_kwargs=log_model_kwargs)

    def _turn_pipeline_to_ml(self, pipeline: Pipeline) -> Pipeline:
        try:
            return ModelLoggingPipeline(
                nodes=pipeline.nodes,
                inference=self.inference,
                input_name=self.input_name,
                kpm_kwargs=self.kpm_kwargs,
                log_model_kwargs=self.log_model_kwargs,
            )
        except KedroMlflowPipelineMLError:
            # the part kept does not produce what the inference pipeline needs: nothing to package
            return Pipeline(pipeline.nodes)

    def __add__(self, other: Any) -> Pipeline:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self._turn_pipeline_to_ml(Pipeline(self.nodes) + Pipeline(other.nodes))

    def __radd__(self, other: Any) -> Pipeline:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self._turn_pipeline_to_ml(Pipeline(other.nodes) + Pipeline(self.nodes))

    def __sub__(self, other: Any) -> Pipeline:
        return self.training - other

    def __or__(self, other: Any) -> Pipeline:
        return self._turn_pipeline_to_ml(self.training | other)

    def only_nodes(self, *node_names: str) -> Pipeline:
        return self.training.only_nodes(*node_names)

    def only_nodes_with_namespaces(self, node_namespaces: Any) -> Pipeline:
        return self.training.only_nodes_with_namespaces(node_namespaces)

    def only_nodes_with_inputs(self, *inputs: str) -> Pipeline:
        return self.training.only_nodes_with_inputs(*inputs)

    def only_nodes_with_outputs(self, *outputs: str) -> Pipeline:
        return self.training.only_nodes_with_outputs(*outputs)
