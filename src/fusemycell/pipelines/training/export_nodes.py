"""The bioimage.io export node of the training pipeline: a thin wrapper around :mod:`fusemycell.export`."""

from __future__ import annotations

from fusemycell.errors import UserError
from fusemycell.export.bioimageio import BioimageioExportError, NotExported, StagedPackage, build_package
from fusemycell.models.model_file import TrainedModel
from fusemycell.patching.store import PatchStore


def export_bioimageio_package(trained_model: TrainedModel, patch_store_val: PatchStore) -> StagedPackage | NotExported:
    """Stage the BioImage Model Zoo package; its test input is the first validation patch's single view.

    A model with position channels is not packaged (the spec cannot describe channels computed
    from the whole volume), nor one the export refuses (a description the spec rejects, weights
    that answer differently from ours): the reason is kept where the package would be, and the
    run goes on (the model file, ONNX export and MLflow model are the trained model).
    """
    if trained_model.card.position is not None:
        names = ", ".join(c.name for c in trained_model.card.input_channels[1:])
        return NotExported(
            f"the model takes position channels ({names}) computed from the whole single view, which a "
            "bioimage.io package cannot describe; use the model file, ONNX or MLflow model, or train with "
            "patching.position.enabled: false for a package"
        )
    if len(patch_store_val) == 0:
        raise UserError(f"{patch_store_val.directory}: no validation patch to make the package's test input")
    single_view, _ = patch_store_val[0]
    try:
        return build_package(trained_model, single_view)
    except BioimageioExportError as exc:
        return NotExported(str(exc))
