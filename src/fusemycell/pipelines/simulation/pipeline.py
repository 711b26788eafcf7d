"""Simulation pipeline: synthetic FuseMyCell acquisitions written into the raw folder."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.simulation.nodes import simulate_acquisitions


def create_pipeline(**kwargs) -> Pipeline:
    """``params:simulation`` -> ``raw_pairs`` (angle/fused TIFFs in the real format)."""
    return Pipeline(
        [
            Node(
                func=simulate_acquisitions,
                inputs="params:simulation",
                outputs="raw_pairs",
                name="simulate_acquisitions",
            )
        ],
        namespace="simulation",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )
