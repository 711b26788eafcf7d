"""Patching pipeline: normalised volumes (02_intermediate) -> patch stores per split (05_model_input)."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.patching.nodes import sample_patches


def create_pipeline(**kwargs) -> Pipeline:
    """Signal-focused sampling on train and val volumes; the stores cut the patches while saving."""
    return Pipeline(
        [
            Node(
                func=sample_patches,
                inputs=["normalized_volumes", "preprocessing_records", "volume_split", "params:patching"],
                outputs=["patch_store_train", "patch_store_val", "patch_sampling_report"],
                name="sample_patches",
            ),
        ],
        namespace="patching",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )
