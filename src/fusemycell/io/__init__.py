"""Reading and writing FuseMyCell volumes and finding angle/fused pairs (no Kedro).

``volume`` holds the types every format shares, ``tiff`` and ``ome_zarr`` the formats,
``formats`` reads either by path, ``naming`` the file-name rules, ``atomic`` the one way to write.
"""

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.tiff import LazyVolume, save_volume, write_volume
from fusemycell.io.volume import Volume, VolumeFormatError, VolumeInfo

__all__ = [
    "LazyVolume",
    "Volume",
    "VolumeFormatError",
    "VolumeInfo",
    "read_info",
    "read_volume",
    "save_volume",
    "write_volume",
]
