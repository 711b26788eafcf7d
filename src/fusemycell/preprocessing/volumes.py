"""Preprocessed volumes, computed lazily plane by plane: crop, normalise, resample.

:class:`PreprocessedVolume` looks like an array; slicing it reads only the raw
planes the slice needs. Writing it with :func:`fusemycell.io.tiff.write_volume`
therefore streams the whole transformation with about one slab in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fusemycell.io.tiff import LazyVolume, Volume, read_volume
from fusemycell.normalization import NormalizationStats, normalize
from fusemycell.preprocessing.crop import Box, box_shape
from fusemycell.preprocessing.resample import resample_axis, resampled_shape, source_planes


@dataclass(frozen=True)
class VolumeTransform:
    """How one raw volume becomes a preprocessed one (and, read backwards, how to undo it)."""

    original_shape: tuple[int, int, int]
    """Shape of the raw volume."""
    spacing_zyx: tuple[float, float, float]
    """Raw voxel size, micrometres."""
    box: Box
    """Crop box ``((z0, z1), (y0, y1), (x0, x1))`` in raw voxels."""
    stats: NormalizationStats
    """Normalisation of this volume."""
    output_spacing_zyx: tuple[float, float, float] | None = None
    """Voxel size after resampling, or None for no resampling."""

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        """Shape after cropping, before resampling."""
        return box_shape(self.box)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """Shape of the preprocessed volume."""
        if self.output_spacing_zyx is None:
            return self.cropped_shape
        return resampled_shape(self.cropped_shape, self.spacing_zyx, self.output_spacing_zyx)

    @property
    def final_spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size of the preprocessed volume."""
        if self.output_spacing_zyx is None:
            return self.spacing_zyx
        # the field of view is kept, so the effective voxel size follows the rounded shape
        return tuple(c * s / o for c, s, o in zip(self.cropped_shape, self.spacing_zyx, self.output_shape))  # type: ignore[return-value]

    def record(self) -> dict[str, Any]:
        """Flat dict for the preprocessing table."""
        row: dict[str, Any] = {}
        for axis, index in zip("zyx", range(3)):
            row[f"original_size_{axis}"] = self.original_shape[index]
            row[f"crop_{axis}0"], row[f"crop_{axis}1"] = self.box[index]
            row[f"output_size_{axis}"] = self.output_shape[index]
            row[f"spacing_{axis}_um"] = self.spacing_zyx[index]
            row[f"output_spacing_{axis}_um"] = self.final_spacing_zyx[index]
        row["norm_low"], row["norm_high"] = self.stats.low, self.stats.high
        row["norm_p_low"], row["norm_p_high"] = self.stats.p_low, self.stats.p_high
        row["resampled"] = self.output_spacing_zyx is not None
        return row

    @classmethod
    def from_record(cls, row: dict[str, Any]) -> VolumeTransform:
        """Inverse of :meth:`record`."""
        axes = "zyx"
        resampled = bool(row.get("resampled", False))
        return cls(
            original_shape=tuple(int(row[f"original_size_{a}"]) for a in axes),  # type: ignore[arg-type]
            spacing_zyx=tuple(float(row[f"spacing_{a}_um"]) for a in axes),  # type: ignore[arg-type]
            box=tuple((int(row[f"crop_{a}0"]), int(row[f"crop_{a}1"])) for a in axes),  # type: ignore[arg-type]
            stats=NormalizationStats(
                low=float(row["norm_low"]),
                high=float(row["norm_high"]),
                p_low=float(row["norm_p_low"]),
                p_high=float(row["norm_p_high"]),
            ),
            output_spacing_zyx=(
                tuple(float(row[f"output_spacing_{a}_um"]) for a in axes) if resampled else None  # type: ignore[arg-type]
            ),
        )


class PreprocessedVolume:
    """Array-like view of a raw volume after crop, normalisation and optional resampling.

    Picklable (it holds the raw file's path, not its voxels), so it can be
    written by a worker process.
    """

    def __init__(self, source_path: str, transform: VolumeTransform, dtype: Any = np.float32):
        self.source_path = str(source_path)
        self.transform = transform
        self.dtype = np.dtype(dtype)
        self._source: LazyVolume | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape after crop and resampling."""
        return self.transform.output_shape

    @property
    def ndim(self) -> int:
        """Always 3."""
        return 3

    def __getstate__(self) -> dict[str, Any]:
        return {"source_path": self.source_path, "transform": self.transform, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source_path"], state["transform"], state["dtype"])  # type: ignore[misc]

    def _raw(self) -> LazyVolume:
        if self._source is None:
            self._source = read_volume(self.source_path, lazy=True).data
        return self._source

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        z_key, yx_key = key[0], key[1:]
        planes = np.arange(self.shape[0])[z_key]
        wanted = np.atleast_1d(planes)
        transform = self.transform
        (z0, z1), (y0, y1), (x0, x1) = transform.box
        cropped = transform.cropped_shape
        if transform.output_spacing_zyx is None:
            block = self._raw()[z0 + wanted, y0:y1, x0:x1] if wanted.size else np.empty((0, *cropped[1:]))
            result = normalize(block, transform.stats, self.dtype)
        else:
            start, stop = source_planes(cropped[0], self.shape[0], wanted)
            block = normalize(self._raw()[z0 + start : z0 + stop, y0:y1, x0:x1], transform.stats, np.float32)
            block = resample_axis(block, 0, self.shape[0], wanted, n_in=cropped[0], offset=start)
            block = resample_axis(block, 1, self.shape[1])
            result = resample_axis(block, 2, self.shape[2]).astype(self.dtype, copy=False)
        result = result[(slice(None), *yx_key)] if yx_key else result
        return result[0] if np.ndim(planes) == 0 else result

    def as_volume(self, metadata: dict[str, Any], spelling: str = "PhysicalSizeX") -> Volume:
        """A :class:`Volume` whose data is this lazy view (writing it streams the transformation)."""
        return Volume(data=self, spacing_zyx=self.transform.final_spacing_zyx, metadata=metadata, spelling=spelling)
