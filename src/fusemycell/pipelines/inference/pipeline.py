"""Inference pipeline: every single view of ``inference.input_dir`` -> a prediction of the same name."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.inference.nodes import plan_predictions, predict_single_view_array


def create_pipeline(**kwargs) -> Pipeline:
    """``kedro run --pipelines inference --params inference.input_dir=IN,inference.output_dir=OUT``."""
    return Pipeline(
        [
            Node(
                func=plan_predictions,
                inputs=["inference_inputs", "inference_model", "params:inference", "params:raw_dir"],
                outputs="inference_outputs",
                name="plan_predictions",
            ),
        ],
        namespace="inference",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )


def create_model_pipeline() -> Pipeline:
    """One in-memory volume in, its prediction out: what kedro-mlflow packages as the MLflow pyfunc model.

    Normalisation with the volume's percentiles, the streaming sliding window, the network, and the
    mapping back to uint16, exactly as the folder pipeline does for files.
    """
    return Pipeline(
        [
            Node(
                func=predict_single_view_array,
                inputs=["single_view_array", "trained_model", "params:inference"],
                outputs="predicted_fused_array",
                name="predict_single_view_array",
            )
        ]
    )
