"""Preprocessed volumes, computed lazily plane by plane: crop, normalise, resample.

:class:`PreprocessedVolume` looks like an array; slicing it reads only the raw
planes the slice needs. Writing it with :func:`fusemycell.io.tiff.write_volume`
therefore streams the whole transformation with about one slab in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import LazyVolume
from fusemycell.io.volume import Volume
from fusemycell.normalization import NormalizationStats, normalize
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.preprocessing.crop import Box, box_shape, full_box, specimen_box
from fusemycell.preprocessing.policy import policy_columns
from fusemycell.preprocessing.resample import resample_axis, resampled_shape, source_planes, target_spacing

logger = logging.getLogger(__name__)


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
        row["resampled"] = self.output_spacing_zyx is not None
        return row


class PreprocessedVolume:
    """Array-like view of a raw volume after crop, normalisation and optional resampling.

    ``source`` is the raw file's path (picklable: it holds the path, not the voxels,
    so it can be written by a worker process) or an in-memory raw array.
    """

    def __init__(self, source_path: str | np.ndarray, transform: VolumeTransform, dtype: Any = np.float32):
        self.source_path = source_path if isinstance(source_path, np.ndarray) else str(source_path)
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

    def _raw(self) -> LazyVolume | np.ndarray:
        if isinstance(self.source_path, np.ndarray):
            return self.source_path
        if self._source is None:
            self._source = read_volume(self.source_path, lazy=True).data
        return self._source

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        z_key, yx_key = key[0], key[1:]
        planes = np.arange(self.shape[0])[z_key]
        wanted = np.atleast_1d(planes)
        # a box of rows and columns (plain slices) reads only the raw voxels it needs, so a band of a
        # wide plane costs about the band, not the planes; anything else is cut from whole planes
        ranges = _unit_ranges(yx_key, self.shape[1:])
        if ranges is None:
            result = self._block(wanted, ((0, self.shape[1]), (0, self.shape[2])))
            result = result[(slice(None), *yx_key)] if yx_key else result
        else:
            result = self._block(wanted, ranges)
        return result[0] if np.ndim(planes) == 0 else result

    def _block(self, wanted: np.ndarray, ranges: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
        """Output planes ``wanted``, rows and columns ``ranges`` (output coordinates), as ``self.dtype``."""
        transform = self.transform
        (z0, _), (y0, _), (x0, _) = transform.box
        cropped = transform.cropped_shape
        (r0, r1), (c0, c1) = ranges
        if not wanted.size or r1 <= r0 or c1 <= c0:  # an empty box reads nothing
            return np.empty((wanted.size, r1 - r0, c1 - c0), dtype=self.dtype)
        if transform.output_spacing_zyx is None:
            block = self._raw()[z0 + wanted, y0 + r0 : y0 + r1, x0 + c0 : x0 + c1]
            return normalize(block, transform.stats, self.dtype)
        start, stop = source_planes(cropped[0], self.shape[0], wanted)
        (ry0, ry1), (cx0, cx1) = (
            _source_range(n_in, n_out, r) for n_in, n_out, r in zip(cropped[1:], self.shape[1:], ranges)
        )
        raw = self._raw()[z0 + start : z0 + stop, y0 + ry0 : y0 + ry1, x0 + cx0 : x0 + cx1]
        block = normalize(raw, transform.stats, np.float32)
        del raw  # the raw box is not needed while resampling
        block = resample_axis(block, 0, self.shape[0], wanted, n_in=cropped[0], offset=start)
        for axis, (first, last), offset in ((1, ranges[0], ry0), (2, ranges[1], cx0)):
            if cropped[axis] != self.shape[axis]:
                block = resample_axis(
                    block, axis, self.shape[axis], np.arange(first, last), n_in=cropped[axis], offset=offset
                )
        return block.astype(self.dtype, copy=False)

    def as_volume(self, metadata: dict[str, Any], spelling: str = "PhysicalSizeX") -> Volume:
        """A :class:`Volume` whose data is this lazy view (writing it streams the transformation)."""
        return Volume(data=self, spacing_zyx=self.transform.final_spacing_zyx, metadata=metadata, spelling=spelling)


def plan_volumes(
    raw_pairs: Mapping[str, Any],
    volume_scans: Mapping[str, Any],
    valid_pairs: Sequence[str],
    config: PreprocessingConfig,
    training_pairs: Sequence[str] | None = None,
) -> tuple[dict[str, Volume], list[dict[str, Any]]]:
    """Crop, normalise (challenge percentiles) and optionally resample every valid pair, lazily.

    ``training_pairs`` (default: every valid pair) are those whose voxel sizes choose the target
    with ``resample.enabled: auto``: the volumes the model learns from, never the held-out ones.

    Returns ``{pair_kind: Volume}`` whose data is a :class:`PreprocessedVolume` (written
    plane by plane when saved) and one record per volume: its :meth:`VolumeTransform.record`,
    the crop and resampling policy (what the patch store's manifest and the model card
    carry to inference), and the normalised fused 99.9th percentile (the patch sampler's
    foreground reference).
    """
    volumes: dict[str, Volume] = {}
    records = []
    norm = config.normalization
    target = resample_target(volume_scans, training_pairs if training_pairs is not None else valid_pairs, config)
    policy = policy_columns(config.normalization, config.crop, target)
    for key in valid_pairs:
        pair = raw_pairs[key]
        scans = {kind: volume_scans[f"{key}_{kind}"] for kind in ("angle", "fused")}
        spacing = tuple(scans["angle"].spacing_zyx)  # angle and fused share one grid; the input's voxel size rules
        box = _box(list(scans.values()), spacing, config)
        for kind, scan in scans.items():
            stats = NormalizationStats(
                low=scan.percentile(norm.low_percentile),
                high=scan.percentile(norm.high_percentile),
                p_low=norm.low_percentile,
                p_high=norm.high_percentile,
            )
            transform = VolumeTransform(tuple(scan.shape), spacing, box, stats, target)  # type: ignore[arg-type]
            lazy = PreprocessedVolume(getattr(pair, kind), transform, np.dtype(config.output_dtype))
            metadata = {"channel": pair.channel, "study": scan.study, "norm_low": stats.low, "norm_high": stats.high}
            volumes[f"{key}_{kind}"] = lazy.as_volume(metadata)
            source = {
                "pair": key,
                "kind": kind,
                "channel": pair.channel,
                "study": scan.study,
                "source": getattr(pair, kind),
            }
            records.append({**source, **transform.record(), **policy, **_normalised_levels(scan, stats)})
    return volumes, records


def resample_target(
    volume_scans: Mapping[str, Any], training_pairs: Sequence[str], config: PreprocessingConfig
) -> tuple[float, float, float] | None:
    """The voxel size every volume is resampled to, or None to keep each acquisition's grid."""
    if config.resample.enabled is False:
        return None
    if config.resample.target_spacing_zyx is not None:  # enabled: true, or auto with the target given
        return config.resample.target_spacing_zyx
    spacings = [tuple(volume_scans[f"{pair}_angle"].spacing_zyx) for pair in training_pairs]
    target = target_spacing(spacings)
    logger.info(
        "resample.enabled auto: every volume on %s um (z, y, x; nnU-Net's rule over the voxel sizes of %d "
        "training volumes, from %s to %s um)",
        _um(target),
        len(spacings),
        _um(np.min(spacings, axis=0)),
        _um(np.max(spacings, axis=0)),
    )
    return target


def _um(spacing: Sequence[float]) -> str:
    return " x ".join(f"{float(s):g}" for s in spacing)


def _box(scans: list[Any], spacing: tuple[float, ...], config: PreprocessingConfig) -> Box:
    """The pair's crop: the specimen's box in both volumes' profiles, or the whole frame."""
    if not config.crop.enabled:
        return full_box(scans[0].shape)
    return specimen_box(
        [(s.profile_z, s.profile_y, s.profile_x) for s in scans],
        spacing,
        threshold=config.crop.threshold,
        margin_um=config.crop.margin_um,
    )


def _normalised_levels(scan: Any, stats: NormalizationStats) -> dict[str, float]:
    """The 99.9th percentile (the patch sampler's foreground reference) and the range, on the normalised scale."""
    reference = scan.percentile(99.9)
    return {
        "p99_9_normalized": float(normalize(np.array([reference]), stats, np.float64)[0]),
        # the challenge's SSIM data range of this volume (max - min on its normalised scale)
        "normalized_range": float(np.ptp(normalize(np.array([scan.minimum, scan.maximum]), stats, np.float64))),
    }


def _unit_ranges(yx_key: tuple[Any, ...], yx_shape: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((y0, y1), (x0, x1))`` when ``yx_key`` selects a box with plain slices (step 1), else None."""
    key = tuple(yx_key) + (slice(None),) * (2 - len(yx_key))
    if len(key) != 2 or not all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        return None
    (y0, y1, _), (x0, x1, _) = (k.indices(int(n)) for k, n in zip(key, yx_shape))
    return (y0, max(y0, y1)), (x0, max(x0, x1))


def _source_range(n_in: int, n_out: int, output_range: tuple[int, int]) -> tuple[int, int]:
    """Input samples ``[start, stop)`` an axis resampled from ``n_in`` to ``n_out`` needs for ``output_range``."""
    first, last = output_range
    if n_in == n_out or last <= first:
        return first, last
    return source_planes(n_in, n_out, np.arange(first, last))
