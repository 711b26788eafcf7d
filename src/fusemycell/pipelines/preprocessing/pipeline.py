"""Preprocessing pipeline: raw pairs -> fingerprint, validation, split, normalised volumes (02_intermediate)."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.preprocessing.nodes import (
    plan_normalized_volumes,
    plot_fingerprints,
    scan_raw_volumes,
    select_valid_pairs,
    split_volumes,
    summarize_fingerprint,
    validate_raw_pairs,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Fingerprint every file in one slab-by-slab pass, validate, split by volume, then normalise and crop."""
    return Pipeline(
        [
            Node(
                func=scan_raw_volumes,
                inputs=["raw_pairs", "params:preprocessing"],
                outputs="volume_scans",
                name="scan_raw_volumes",
            ),
            Node(
                func=summarize_fingerprint,
                inputs="volume_scans",
                outputs=["fingerprint", "fingerprint_table", "fingerprint_summary"],
                name="summarize_fingerprint",
            ),
            Node(
                func=plot_fingerprints,
                inputs="volume_scans",
                outputs="fingerprint_figures",
                name="plot_fingerprints",
            ),
            Node(
                func=validate_raw_pairs,
                inputs=["raw_pairs", "volume_scans", "params:preprocessing", "params:patching"],
                outputs="validation_report",
                name="validate_raw_pairs",
            ),
            Node(
                func=select_valid_pairs,
                inputs=["validation_report", "params:preprocessing"],
                outputs="valid_pairs",
                name="select_valid_pairs",
            ),
            Node(
                func=split_volumes,
                inputs=["valid_pairs", "volume_scans", "params:preprocessing"],
                outputs="volume_split",
                name="split_volumes",
            ),
            Node(
                func=plan_normalized_volumes,
                inputs=["raw_pairs", "volume_scans", "valid_pairs", "params:preprocessing", "volume_split"],
                outputs=["normalized_volumes", "preprocessing_records"],
                name="plan_normalized_volumes",
            ),
        ],
        namespace="preprocessing",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )
