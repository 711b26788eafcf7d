"""Applying a trained model to a raw single-view file, as the challenge asks.

The input is normalised with its own percentiles (the challenge's), optionally
cropped to the specimen and resampled to the training voxel size, predicted with
the streaming sliding window, then mapped back: resampled to the input's grid,
placed in the full field of view, and turned into uint16 on the input's
intensity scale. The result is a lazily computed :class:`~fusemycell.io.tiff.Volume`
with the input's shape, voxel size and metadata; writing it streams the whole chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.inference.background import BackgroundPlanes
from fusemycell.inference.predictor import Backend, FlipAveraging, StreamingPrediction
from fusemycell.inference.settings import InferenceSettings
from fusemycell.io.tiff import Volume, VolumeFormatError, raw_dtype_problem, read_volume
from fusemycell.normalization import NormalizationStats
from fusemycell.preprocessing.crop import full_box, specimen_box
from fusemycell.preprocessing.fingerprint import scan_volume
from fusemycell.preprocessing.resample import linear_weights, resample_axis
from fusemycell.preprocessing.volumes import PreprocessedVolume, VolumeTransform


@dataclass(frozen=True)
class PreparedInput:
    """What one pass over an input file tells the predictor."""

    path: str
    shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    stats: NormalizationStats
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def prepare_input(path: str, percentiles: Sequence[float], settings: InferenceSettings) -> PreparedInput:
    """Percentiles (exact, slab by slab) and, when cropping, the specimen's box.

    Raises
    ------
    VolumeFormatError
        Naming the file, when it cannot be read, is not of a raw voxel type
        (:data:`~fusemycell.io.tiff.RAW_DTYPES`), holds NaN or Inf voxels (the
        network would turn them into a garbage output), or is constant (nothing to restore).
    """
    scan = scan_volume(
        str(path),
        pair="",
        kind="angle",
        channel="",
        slab_depth=settings.slab_depth,
        percentiles=sorted({*percentiles}),
        projection_side=16,
    )
    if scan.error is not None:
        raise VolumeFormatError(scan.error)
    problem = raw_dtype_problem(scan.dtype)
    if problem is None and scan.nonfinite:
        problem = f"{scan.nonfinite} non-finite voxels (NaN or Inf); the prediction would be meaningless"
    if problem is None and scan.is_constant:
        problem = f"constant image (every voxel is {scan.minimum:g}); there is nothing to predict"
    if problem is not None:
        raise VolumeFormatError(f"{path}: {problem}")
    stats = NormalizationStats(
        low=scan.percentile(percentiles[0]),
        high=scan.percentile(percentiles[1]),
        p_low=percentiles[0],
        p_high=percentiles[1],
    )
    box = (
        specimen_box([(scan.profile_z, scan.profile_y, scan.profile_x)], scan.spacing_zyx)
        if settings.crop_to_specimen
        else full_box(scan.shape)
    )
    return PreparedInput(str(path), tuple(scan.shape), tuple(scan.spacing_zyx), stats, box)  # type: ignore[arg-type]


class ResampledBack:
    """Sequential array-like: planes of ``inner`` (on the resampled grid) interpolated back to ``shape``."""

    def __init__(self, inner: Any, shape: Sequence[int]):
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

    def __init__(self, inner: Any, box: Sequence[tuple[int, int]], shape: Sequence[int], fill: float):
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
    """Sequential array-like: normalised planes mapped to the input's intensity scale, as uint16."""

    def __init__(self, inner: Any, stats: NormalizationStats, min_range: float):
        self.inner = inner
        self.shape = tuple(inner.shape)
        self.dtype = np.dtype(np.uint16)
        self.low = float(stats.low)
        # a narrow input range would quantise the prediction coarsely: stretch it, the metric re-normalises
        self.scale = max(float(stats.high - stats.low), float(min_range))

    def __getitem__(self, z: int) -> np.ndarray:
        plane = np.asarray(self.inner[z], dtype=np.float32) * np.float32(self.scale) + np.float32(self.low)
        return np.clip(np.rint(plane), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def default_tile(metadata: dict[str, Any]) -> tuple[int, int, int]:
    """The training patch size, doubled in y and x (bigger tiles, fewer seams, same memory class)."""
    patch = metadata.get("patch_size_zyx") or (32, 64, 64)
    return int(patch[0]), 2 * int(patch[1]), 2 * int(patch[2])


def predict_file(
    path: str,
    backend: Backend,
    settings: InferenceSettings,
    model_metadata: dict[str, Any],
) -> Volume:
    """The prediction of one raw single-view file, computed lazily (stream it with ``save_volume``)."""
    percentiles = model_metadata.get("normalization", {})
    prepared = prepare_input(
        path,
        (float(percentiles.get("low_percentile", 2.0)), float(percentiles.get("high_percentile", 99.8))),
        settings,
    )
    resample_to = model_metadata.get("resample_spacing_zyx")
    transform = VolumeTransform(
        original_shape=prepared.shape,
        spacing_zyx=prepared.spacing_zyx,
        box=prepared.box,
        stats=prepared.stats,
        output_spacing_zyx=tuple(resample_to) if resample_to else None,
    )
    source = PreprocessedVolume(path, transform, np.float32)
    predictor = FlipAveraging(backend) if settings.tta else backend
    tile = settings.tile_zyx or default_tile(model_metadata)
    prediction: Any = StreamingPrediction(
        source,
        predictor,
        tile,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        description=f"predicting {Path(path).name}",
        read_ahead=settings.background_io,
    )
    if resample_to:
        prediction = ResampledBack(prediction, transform.cropped_shape)
    if transform.box != full_box(prepared.shape):
        prediction = PlacedInFrame(prediction, transform.box, prepared.shape, fill=0.0)
    header = read_volume(path, lazy=True)
    header.data.close()
    data: Any = MappedToUint16(prediction, prepared.stats, settings.min_output_range)
    if settings.background_io:  # planes computed ahead while the writer encodes and writes the last ones
        data = BackgroundPlanes(data, depth=tile[0], description=f"predicting {path}", path=str(path))
    return Volume(
        data=data,
        spacing_zyx=header.spacing_zyx,
        metadata=header.metadata,
        source=path,
        spelling=header.spelling,
    )


def make_backend(model: Any, settings: InferenceSettings, onnx_path: str | None = None) -> Backend:
    """The PyTorch network on its device, or the ONNX Runtime session of its export."""
    if settings.backend == "onnx":
        from fusemycell.inference.onnx_backend import OnnxBackend

        if not onnx_path:
            raise ValueError("inference.backend is 'onnx' but inference.onnx_path is not set")
        return OnnxBackend(onnx_path)
    from fusemycell.inference.predictor import TorchBackend

    return TorchBackend(model.network, settings.device, settings.amp)


def predict_in_memory(single_view: np.ndarray, model: Any, settings: InferenceSettings) -> np.ndarray:
    """The same prediction as :func:`predict_file` for an in-memory ZYX array (what the MLflow model serves)."""
    from fusemycell.inference.predictor import TorchBackend, predict_array
    from fusemycell.normalization import normalize

    volume = np.asarray(single_view)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D ZYX volume, got an array of shape {volume.shape}")
    percentiles = model.metadata.get("normalization", {})
    low_q = float(percentiles.get("low_percentile", 2.0))
    high_q = float(percentiles.get("high_percentile", 99.8))
    low, high = (float(v) for v in np.percentile(volume, (low_q, high_q)))
    stats = NormalizationStats(low=low, high=high, p_low=low_q, p_high=high_q)
    backend: Backend = TorchBackend(model.network, settings.device, settings.amp)
    if settings.tta:
        backend = FlipAveraging(backend)
    tile = settings.tile_zyx or default_tile(model.metadata)
    predicted = predict_array(
        normalize(volume, stats), backend, tile, overlap=settings.overlap, batch_size=settings.batch_size
    )
    mapped = MappedToUint16(predicted, stats, settings.min_output_range)
    return np.stack([mapped[z] for z in range(volume.shape[0])])
