"""Evaluation pipeline: predict the held-out test volumes, score model and baselines, report."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.evaluation.nodes import (
    plot_evaluation_summary,
    plot_test_volumes,
    predict_test_volumes,
    score_test_volumes,
    summarize_evaluation,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Test volumes -> predictions (07_model_output) -> metrics, summaries and figures (08_reporting)."""
    return Pipeline(
        [
            Node(
                func=predict_test_volumes,
                inputs=["raw_pairs", "volume_split", "trained_model", "params:inference"],
                outputs="test_predictions",
                name="predict_test_volumes",
            ),
            Node(
                func=score_test_volumes,
                inputs=["raw_pairs", "volume_split", "test_predictions", "params:evaluation"],
                outputs="evaluation_metrics",
                name="score_test_volumes",
            ),
            Node(
                func=summarize_evaluation,
                inputs="evaluation_metrics",
                outputs=["evaluation_by_channel", "evaluation_by_study", "evaluation_report"],
                name="summarize_evaluation",
            ),
            Node(
                func=plot_test_volumes,
                inputs=["raw_pairs", "volume_split", "test_predictions"],
                outputs="evaluation_figures",
                name="plot_test_volumes",
            ),
            Node(
                func=plot_evaluation_summary,
                inputs="evaluation_metrics",
                outputs="evaluation_summary_figure",
                name="plot_evaluation_summary",
            ),
        ],
        namespace="evaluation",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )
