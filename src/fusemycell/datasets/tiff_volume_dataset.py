"""``TiffVolumeDataset``: one FuseMyCell TIFF volume in the Kedro catalog.

Modelled on kedro-datasets' ``pillow.ImageDataset``: fsspec filesystem,
versioning, ``DatasetError`` naming the path. The reading and writing itself is
:mod:`fusemycell.io.tiff`.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import numpy as np
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)

from fusemycell.datasets.previews import ImagePreview
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume, VolumeFormatError


def max_projection_png(data: Any, slab_depth: int = 16, max_side: int = 512) -> bytes:
    """PNG bytes of the z maximum projection, contrast-stretched to percentiles 1 and 99.8.

    Reads ``slab_depth`` planes at a time, so a lazy volume is never loaded whole.
    """
    from PIL import Image

    projection = None
    for z0 in range(0, data.shape[0], slab_depth):
        slab_max = np.asarray(data[z0 : z0 + slab_depth]).max(axis=0).astype(np.float32)
        projection = slab_max if projection is None else np.maximum(projection, slab_max)
    low, high = np.percentile(projection, (1, 99.8))
    scaled = np.clip((projection - low) / (high - low if high > low else 1.0), 0, 1)
    image = Image.fromarray((scaled * 255).astype(np.uint8))
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class TiffVolumeDataset(AbstractVersionedDataset[Volume, Volume]):
    """Loads and saves a ZYX volume with its voxel size and metadata.

    ``load`` returns a :class:`fusemycell.io.volume.Volume`; with
    ``load_args: {lazy: true}`` its ``data`` is a
    :class:`fusemycell.io.tiff.LazyVolume` that reads only the slabs a node
    slices. ``save`` writes BigTIFF, tiled 128x128, with resolution tags and
    ImageJ metadata, atomically.

    Example catalog entry::

        angle_volume:
          type: fusemycell.datasets.TiffVolumeDataset
          filepath: data/01_raw/image_0_nucleus_angle.tif
          load_args:
            lazy: true
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        load_args: dict[str, Any] | None = None,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Create a dataset for one ``.tif`` file.

        Args:
            filepath: Path to the file, optionally with an fsspec protocol (``s3://...``).
            load_args: ``lazy`` (bool, default False): return a lazily read volume.
                Lazy reads need a local file.
            version: Kedro versioning (load/save version).
            credentials: Credentials for the fsspec filesystem.
            fs_args: Extra arguments for the fsspec filesystem.
            metadata: Free metadata for plugins such as kedro-viz (layer, ...).
        """
        protocol, path = get_protocol_and_path(str(filepath), version)
        _fs_args = deepcopy(fs_args) or {}
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(deepcopy(credentials) or {}), **_fs_args)
        self._load_args = {"lazy": False, **(load_args or {})}
        unknown = set(self._load_args) - {"lazy"}
        if unknown:
            raise DatasetError(f"{filepath}: unknown load_args {sorted(unknown)}; supported: lazy")
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "load_args": self._load_args,
            "version": self._version,
        }

    def load(self) -> Volume:
        """Read the volume (lazily with ``load_args.lazy``)."""
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            if self._protocol == "file":
                return read_volume(load_path, lazy=self._load_args["lazy"])
            if self._load_args["lazy"]:
                raise DatasetError(
                    f"{self._protocol}://{load_path}: lazy reads need a local file; "
                    "copy it locally or load it with lazy: false"
                )
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / PurePosixPath(load_path).name
                self._fs.get_file(load_path, str(local))
                volume = read_volume(local, lazy=False)
                volume.source = f"{self._protocol}://{load_path}"
                return volume
        except VolumeFormatError as exc:
            raise DatasetError(str(exc)) from exc

    def save(self, data: Volume) -> None:
        """Write ``data`` atomically: a temporary file in the same folder, then a rename."""
        if not isinstance(data, Volume):
            raise DatasetError(
                f"{self._filepath}: TiffVolumeDataset saves a fusemycell.io.Volume, got {type(data).__name__}"
            )
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        try:
            if self._protocol == "file":
                save_volume(save_path, data)
            else:
                with tempfile.TemporaryDirectory() as scratch:
                    local = Path(scratch) / PurePosixPath(save_path).name
                    save_volume(local, data)
                    self._fs.put_file(str(local), save_path)  # object stores publish a put atomically
        except (VolumeFormatError, OSError) as exc:
            raise DatasetError(str(exc)) from exc
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def _release(self) -> None:
        super()._release()
        self._invalidate_cache()

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))

    def preview(self) -> ImagePreview:
        """kedro-viz preview: the z maximum projection as a base64 PNG."""
        volume = self._load_lazily()
        return ImagePreview(base64.b64encode(max_projection_png(volume.data)).decode("utf-8"))

    def _load_lazily(self) -> Volume:
        if self._protocol == "file":
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
            try:
                return read_volume(load_path, lazy=True)
            except VolumeFormatError as exc:
                raise DatasetError(str(exc)) from exc
        return self.load()
