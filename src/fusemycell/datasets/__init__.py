"""Kedro datasets for FuseMyCell volumes; the file handling itself lives in :mod:`fusemycell.io`."""

from fusemycell.datasets.raw_pairs_dataset import FuseMyCellPairsDataset, ParallelVolumes
from fusemycell.datasets.tiff_volume_dataset import TiffVolumeDataset

__all__ = ["FuseMyCellPairsDataset", "ParallelVolumes", "TiffVolumeDataset"]
