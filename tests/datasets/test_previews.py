"""kedro-viz shows a dataset's preview by the name of its ``preview()`` return annotation, read as it reads it."""

from __future__ import annotations

import inspect

import pytest

from fusemycell.datasets.patch_store_dataset import PatchStoreDataset
from fusemycell.datasets.raw_pairs_dataset import FuseMyCellPairsDataset
from fusemycell.datasets.tiff_folder_dataset import TiffFolderDataset
from fusemycell.datasets.tiff_volume_dataset import TiffVolumeDataset


@pytest.mark.parametrize(
    ("dataset", "kind"),
    [
        (TiffVolumeDataset, "ImagePreview"),
        (TiffFolderDataset, "ImagePreview"),
        (FuseMyCellPairsDataset, "TablePreview"),
        (PatchStoreDataset, "TablePreview"),
    ],
)
def test_the_preview_type_is_one_kedro_viz_renders(dataset, kind):
    annotation = inspect.signature(dataset.preview).return_annotation  # kedro-viz's node_metadata does this
    assert getattr(annotation, "__name__", str(annotation)) == kind
