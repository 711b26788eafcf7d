"""The one way an input becomes network input and a network output becomes uint16: :class:`InputTransform`.

Built from the model card and a scan of the input (:meth:`InputTransform.from_card`),
it normalises the input with its own percentiles (the card's), crops it to the
specimen when asked (the card's crop policy), resamples it to the training voxel
size when the model was trained on resampled volumes, and maps a prediction back:
resampled to the input's grid, placed in the full field of view, turned into uint16.
Every consumer of a model (file and in-memory prediction, both backends, the MLflow
model, evaluation) goes through it.

Output range: the prediction ``y`` (on the network's scale) becomes
``offset + y * scale`` rounded and clipped to uint16 ``[0, 65535]``. ``scale`` is
the input's ``p_high - p_low``, stretched to ``min_output_range`` when narrower;
``offset`` is the input's ``p_low`` where the result fits in uint16. A float input
whose ``p_low`` is negative (or whose scale reaches past 65535) is shifted into
``[0, 65535]`` with a warning naming the file, instead of being silently clipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusemycell.errors import UserError
from fusemycell.io.volume import VolumeFormatError, raw_dtype_problem
from fusemycell.models.card import ModelCard
from fusemycell.normalization import NormalizationStats
from fusemycell.position import PositionField, position_field
from fusemycell.preprocessing.crop import full_box, specimen_box
from fusemycell.preprocessing.fingerprint import VolumeScan, scan_volume
from fusemycell.preprocessing.resample import linear_weights, resample_axis
from fusemycell.preprocessing.volumes import PreprocessedVolume, VolumeTransform

logger = logging.getLogger(__name__)

UINT16_MAX = float(np.iinfo(np.uint16).max)


class InputError(UserError):
    """An input cannot be predicted; the message names it."""


def card_percentiles(card: ModelCard) -> tuple[float, float]:
    """The card's low and high percentiles."""
    return card.normalization.low_percentile, card.normalization.high_percentile


def scan_input(path: str, card: ModelCard, slab_depth: int = 16) -> VolumeScan:
    """Percentiles (exact, slab by slab), extremes and profiles of an input file."""
    return scan_volume(
        str(path),
        pair="",
        kind="angle",
        channel="",
        slab_depth=slab_depth,
        percentiles=sorted(set(card_percentiles(card))),
        projection_side=16,
    )


def scan_array(array: np.ndarray, card: ModelCard, spacing_zyx: tuple[float, float, float], name: str) -> VolumeScan:
    """The same scan for an in-memory ZYX array."""
    volume = np.asarray(array)
    if volume.ndim != 3:
        raise InputError(f"{name}: expected a 3D ZYX volume, got an array of shape {volume.shape}")
    scan = VolumeScan(name=name, path=name, pair="", kind="angle", channel="")
    scan.shape, scan.dtype, scan.spacing_zyx = tuple(volume.shape), str(volume.dtype), tuple(spacing_zyx)
    finite = np.isfinite(volume) if volume.dtype.kind == "f" else None
    scan.nonfinite = int(volume.size - finite.sum()) if finite is not None else 0
    values = volume[finite] if finite is not None and scan.nonfinite else volume
    if values.size:
        qs = sorted(set(card_percentiles(card)))
        scan.percentiles = {f"{q:g}".replace(".", "_"): float(v) for q, v in zip(qs, np.percentile(values, qs))}
        scan.minimum, scan.maximum = float(values.min()), float(values.max())
    as_float = np.where(finite, volume, 0) if finite is not None else volume
    scan.profile_z = as_float.mean(axis=(1, 2)).tolist()
    scan.profile_y = as_float.mean(axis=(0, 2)).tolist()
    scan.profile_x = as_float.mean(axis=(0, 1)).tolist()
    return scan


def _check_scan(scan: VolumeScan) -> None:
    if scan.error is not None:
        raise VolumeFormatError(scan.error)
    problem = raw_dtype_problem(scan.dtype)
    if problem is None and scan.nonfinite:
        problem = f"{scan.nonfinite} non-finite voxels (NaN or Inf); the prediction would be meaningless"
    if problem is None and scan.is_constant:
        problem = f"constant image (every voxel is {scan.minimum:g}); there is nothing to predict"
    if problem is not None:
        raise VolumeFormatError(f"{scan.path}: {problem}")


def input_statistics(scan: VolumeScan, card: ModelCard) -> NormalizationStats:
    """The card's percentile normalisation of this input, with a robust fallback for a flat one.

    When ``p_low == p_high`` but the volume is not constant (a dim background with a
    few bright voxels), the challenge's formula would leave raw values to the network
    (and saturate the output): ``p_high`` falls back to the maximum (then ``p_low`` to
    the minimum), with a warning naming the file.
    """
    p_low, p_high = card_percentiles(card)
    low, high = scan.percentile(p_low), scan.percentile(p_high)
    if low == high and scan.maximum > scan.minimum:
        fallback = (low, scan.maximum) if scan.maximum > low else (scan.minimum, low)
        logger.warning(
            "%s: percentiles %g and %g are both %g (a flat image with few other voxels); "
            "normalising the network input between %g and %g instead",
            scan.path,
            p_low,
            p_high,
            low,
            *fallback,
        )
        low, high = fallback
    return NormalizationStats(low=low, high=high, p_low=p_low, p_high=p_high)


def output_mapping(stats: NormalizationStats, min_output_range: float, name: str) -> tuple[float, float]:
    """``(offset, scale)`` of the uint16 output: see the module's docstring."""
    scale = min(max(float(stats.high - stats.low), float(min_output_range)), UINT16_MAX)
    offset = float(np.clip(stats.low, 0.0, UINT16_MAX - scale))
    if offset != float(stats.low):
        logger.warning(
            "%s: the input's intensities (%g to %g at percentiles %g and %g) do not fit uint16 as they are; "
            "the output is shifted so that percentile %g maps to %g",
            name,
            stats.low,
            stats.high,
            stats.p_low,
            stats.p_high,
            stats.p_low,
            offset,
        )
    return offset, scale


@dataclass(frozen=True)
class InputTransform:
    """One input's way into the network and back, as the model card prescribes."""

    card: ModelCard
    """The model's card."""
    volume: VolumeTransform
    """Crop box, normalisation and resampling of this input."""
    offset: float
    """uint16 value of the prediction's 0."""
    scale: float
    """uint16 span of the prediction's 1."""

    @classmethod
    def from_card(
        cls,
        card: ModelCard,
        input_scan: VolumeScan,
        *,
        crop_to_specimen: bool = False,
        min_output_range: float = 4096.0,
    ) -> InputTransform:
        """The transform of one input, from its scan (:func:`scan_input` or :func:`scan_array`).

        Raises
        ------
        VolumeFormatError
            Naming the input when it cannot be read, is not of a raw voxel type, holds
            NaN or Inf voxels, or is constant.
        """
        _check_scan(input_scan)
        stats = input_statistics(input_scan, card)
        crop = card.preprocessing.crop
        box = (
            specimen_box(
                [(input_scan.profile_z, input_scan.profile_y, input_scan.profile_x)],
                input_scan.spacing_zyx,
                threshold=crop.threshold,
                margin_um=crop.margin_um,
            )
            if crop_to_specimen
            else full_box(input_scan.shape)
        )
        volume = VolumeTransform(
            original_shape=tuple(input_scan.shape),  # type: ignore[arg-type]
            spacing_zyx=tuple(input_scan.spacing_zyx),  # type: ignore[arg-type]
            box=box,
            stats=stats,
            output_spacing_zyx=card.preprocessing.resample_spacing_zyx,
        )
        return cls(card, volume, *output_mapping(stats, min_output_range, input_scan.path))

    def network_input(self, source: str | np.ndarray) -> PreprocessedVolume:
        """The input (a file's path or the array itself) on the network's grid and scale, computed lazily."""
        return PreprocessedVolume(source, self.volume, np.float32)

    def position_field(self, network_input: Any, name: str = "") -> PositionField | None:
        """The card's position channels of this input (one pass over ``network_input``), or None without them.

        Computed on the network's grid from the whole normalised single view, as patching did for the
        training volumes (:func:`fusemycell.position.position_field`).
        """
        if self.card.position is None:
            return None
        spacing = self.volume.output_spacing_zyx or self.volume.spacing_zyx
        return position_field(network_input, spacing, self.card.position, name=name)

    def to_uint16(self, prediction: Any) -> Any:
        """Sequential array-like: the network's prediction on the input's grid, as uint16."""
        if self.volume.output_spacing_zyx is not None:
            prediction = ResampledBack(prediction, self.volume.cropped_shape)
        if self.volume.box != full_box(self.volume.original_shape):
            prediction = PlacedInFrame(prediction, self.volume.box, self.volume.original_shape, fill=0.0)
        return MappedToUint16(prediction, self.offset, self.scale)


class ResampledBack:
    """Sequential array-like: planes of ``inner`` (on the resampled grid) interpolated back to ``shape``."""

    def __init__(self, inner: Any, shape: tuple[int, ...]):
        self.inner = inner
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self._lower, self._upper, self._weight = linear_weights(inner.shape[0], self.shape[0])
        self._cache: dict[int, np.ndarray] = {}

    def _inner_plane(self, index: int) -> np.ndarray:
        if index not in self._cache:
            for old in [k for k in self._cache if k < index - 1]:
                del self._cache[old]
            plane = self.inner[index][None]
            plane = resample_axis(resample_axis(plane, 1, self.shape[1]), 2, self.shape[2])[0]
            self._cache[index] = plane
        return self._cache[index]

    def __getitem__(self, z: int) -> np.ndarray:
        lower, upper, weight = int(self._lower[z]), int(self._upper[z]), float(self._weight[z])
        first = self._inner_plane(lower)
        return first if upper == lower else first * (1 - weight) + self._inner_plane(upper) * weight


class PlacedInFrame:
    """Sequential array-like: planes of ``inner`` placed at ``box`` in a frame of ``shape`` filled with ``fill``."""

    def __init__(self, inner: Any, box: Any, shape: tuple[int, ...], fill: float):
        self.inner = inner
        self.box = tuple(box)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.float32)
        self.fill = float(fill)

    def __getitem__(self, z: int) -> np.ndarray:
        (z0, z1), (y0, y1), (x0, x1) = self.box
        plane = np.full(self.shape[1:], self.fill, dtype=np.float32)
        if z0 <= z < z1:
            plane[y0:y1, x0:x1] = self.inner[z - z0]
        return plane


class MappedToUint16:
    """Sequential array-like: normalised planes mapped to ``offset + y * scale``, as uint16."""

    def __init__(self, inner: Any, offset: float, scale: float):
        self.inner = inner
        self.shape = tuple(inner.shape)
        self.dtype = np.dtype(np.uint16)
        self.offset, self.scale = np.float32(offset), np.float32(scale)

    def __getitem__(self, z: int) -> np.ndarray:
        plane = np.asarray(self.inner[z], dtype=np.float32) * self.scale + self.offset
        return np.clip(np.rint(plane), 0, UINT16_MAX).astype(np.uint16)
