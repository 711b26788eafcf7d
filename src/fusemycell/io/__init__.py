"""Reading and writing FuseMyCell volumes and finding angle/fused pairs (no Kedro)."""

from fusemycell.io.tiff import (
    LazyVolume,
    Volume,
    VolumeFormatError,
    VolumeInfo,
    read_info,
    read_volume,
    save_volume,
    write_volume,
)

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
