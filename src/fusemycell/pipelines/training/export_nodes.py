"""The bioimage.io export node of the training pipeline: a thin wrapper around :mod:`fusemycell.export`."""

from __future__ import annotations

from fusemycell.export.bioimageio import StagedPackage, build_package
from fusemycell.models.checkpoint import TrainedModel
from fusemycell.patching.store import PatchStore


def export_bioimageio_package(trained_model: TrainedModel, patch_store_val: PatchStore) -> StagedPackage:
    """Stage the BioImage Model Zoo package; its test input is the first validation patch's single view."""
    if len(patch_store_val) == 0:
        raise ValueError(f"{patch_store_val.directory}: no validation patch to make the package's test input")
    single_view, _ = patch_store_val[0]
    return build_package(trained_model, single_view)
