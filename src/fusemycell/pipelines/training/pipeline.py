"""Training pipeline: patch stores (05_model_input) -> trained U-Net (06_models), history and figures."""

from kedro.pipeline import Node, Pipeline

from fusemycell.pipelines.training.export_nodes import export_bioimageio_package
from fusemycell.pipelines.training.nodes import (
    describe_training_domain,
    export_onnx_model,
    guard_fusion_model,
    plot_learning_curves,
    train_fusion_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Train on the train patches, choose the best epoch on whole validation volumes, guard on them."""
    return Pipeline(
        [
            Node(
                func=describe_training_domain,
                inputs=["fingerprint", "volume_split"],
                outputs="training_domain",
                name="describe_training_domain",
            ),
            Node(
                func=train_fusion_model,
                inputs={
                    "patch_store_train": "patch_store_train",
                    "patch_store_val": "patch_store_val",
                    "normalized_volumes": "normalized_volumes",
                    "volume_split": "volume_split",
                    "training_domain": "training_domain",
                    "training": "params:training",
                    "inference": "params:inference",
                },
                outputs=["unguarded_model", "training_history", "validation_slices"],
                name="train_fusion_model",
            ),
            Node(
                func=guard_fusion_model,
                inputs=["unguarded_model", "normalized_volumes", "volume_split", "params:training", "params:inference"],
                outputs="trained_model",
                name="guard_fusion_model",
            ),
            Node(
                func=export_onnx_model,
                inputs="trained_model",
                outputs="onnx_model",
                name="export_onnx_model",
            ),
            Node(
                func=export_bioimageio_package,
                inputs=["trained_model", "patch_store_val"],
                outputs="bioimageio_model",
                name="export_bioimageio_package",
            ),
            Node(
                func=plot_learning_curves,
                inputs="training_history",
                outputs="learning_curves",
                name="plot_learning_curves",
            ),
        ],
        namespace="training",  # kedro-viz groups its nodes; dataset names stay global
        prefix_datasets_with_namespace=False,
    )
