"""The napari reader: FuseMyCell TIFF volumes and the OME-Zarr images the project writes, read lazily.

TIFF files and OME-Zarr images are read with :func:`fusemycell.io.formats.read_volume`, lazily:
napari asks for the planes it shows and only those are read. A file named like the challenge's
(``image_3_nucleus_angle.tif``) is always taken, so a damaged one gets the project's error naming
it; another TIFF only when its header describes a 3D volume (napari's own reader then keeps 2D
images and RGB pictures).

Its first call in a process (npe2 makes it while napari looks for the readers of a file) makes this
reader napari's preference for FuseMyCell names (:mod:`fusemycell.napari.preferences`): without it,
napari would ask which of two readers to use, and its own gives no voxel size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fusemycell.io.formats import read_info, read_volume
from fusemycell.io.naming import TIFF_SUFFIXES, is_ome_zarr
from fusemycell.io.pairs import PairingError, parse_filename
from fusemycell.io.volume import VolumeFormatError
from fusemycell.napari.layers import LayerData, volume_layer, volume_name
from fusemycell.napari.preferences import on_first_use


def get_reader(path: str | Sequence[str]) -> Callable[[str | Sequence[str]], list[LayerData]] | None:
    """napari's reader hook: :func:`read_layers` when every path is a volume this project reads, else None."""
    on_first_use()
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_accepts(str(p)) for p in paths):
        return None
    return read_layers


def _accepts(path: str) -> bool:
    if is_ome_zarr(path.rstrip("/")):
        return Path(path).is_dir()
    if not path.lower().endswith(TIFF_SUFFIXES):
        return False
    try:
        parse_filename(Path(path).name)
        return True
    except PairingError:
        pass
    try:
        read_info(path)
    except VolumeFormatError:
        return False
    return True


def read_layers(path: str | Sequence[str]) -> list[LayerData]:
    """One image layer per volume, read lazily, with its voxel size as ``scale`` (ZYX micrometres).

    Raises
    ------
    VolumeFormatError
        Naming the file and what is wrong with it.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for item in paths:
        source = str(item).rstrip("/")
        volume = read_volume(source, lazy=True)  # a TIFF or an OME-Zarr image, by its name
        layers.append(volume_layer(volume, volume_name(source)))
    return layers
