"""Inference pipeline: every single view of ``inference.input_dir`` -> a prediction of the same name."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.inference.nodes import check_failures, plan_predictions


def create_pipeline(**kwargs) -> Pipeline:
    """``kedro run --pipeline inference --params inference.input_dir=IN,inference.output_dir=OUT``."""
    return Pipeline(
        [
            Node(
                func=plan_predictions,
                inputs=["inference_inputs", "inference_model", "params:inference"],
                outputs=["inference_outputs", "inference_report"],
                name="predict_single_views",
            ),
            Node(
                func=check_failures,
                inputs="inference_report",
                outputs=None,
                name="fail_on_unreadable_inputs",
            ),
        ]
    )
