"""Kedro datasets for FuseMyCell volumes, patches and models; the file handling itself lives in plain modules."""

from fusemycell.datasets.bioimageio_dataset import BioimageioPackageDataset
from fusemycell.datasets.model_dataset import OnnxModelDataset, TorchModelDataset
from fusemycell.datasets.patch_store_dataset import PatchStoreDataset
from fusemycell.datasets.raw_pairs_dataset import FuseMyCellPairsDataset, ParallelVolumes
from fusemycell.datasets.tiff_folder_dataset import TiffFolderDataset
from fusemycell.datasets.tiff_volume_dataset import TiffVolumeDataset
from fusemycell.datasets.volume_folder_dataset import VolumeFolderDataset

__all__ = [
    "BioimageioPackageDataset",
    "FuseMyCellPairsDataset",
    "OnnxModelDataset",
    "ParallelVolumes",
    "PatchStoreDataset",
    "TiffFolderDataset",
    "TiffVolumeDataset",
    "TorchModelDataset",
    "VolumeFolderDataset",
]
