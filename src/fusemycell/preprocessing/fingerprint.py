"""Dataset fingerprint: what every volume holds, computed in one slab-by-slab pass.

One pass over a volume yields everything later steps need: exact intensity
percentiles (hence the challenge normalisation), Otsu's foreground threshold and
fraction, non-finite voxels, mean-intensity profiles along z, y and x (x is the
illumination axis), and small maximum projections for figures. Memory is one
slab plus a dense 16-bit histogram, whatever the volume's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fusemycell.io.digest import ContentDigest
from fusemycell.io.formats import read_volume
from fusemycell.io.metadata import prediction_mark as provenance_mark
from fusemycell.io.naming import volume_stem
from fusemycell.io.volume import VolumeFormatError
from fusemycell.normalization import IntensityHistogram
from fusemycell.preprocessing.noise import plane_indices, plane_noise
from fusemycell.progress import track

#: Percentiles recorded for every volume.
FINGERPRINT_PERCENTILES = (0.1, 2.0, 50.0, 99.8, 99.9)


@dataclass
class VolumeScan:
    """Fingerprint of one file. ``error`` is set (and the rest empty) when it could not be read."""

    name: str
    """File stem, e.g. ``image_3_nucleus_angle``."""
    path: str
    pair: str
    kind: str
    channel: str
    error: str | None = None
    shape: tuple[int, ...] = ()
    dtype: str = ""
    spacing_zyx: tuple[float, ...] = ()
    spacing_found: bool = True
    spacing_conflicts: list[str] = field(default_factory=list)
    """Voxel-size sources of the file that disagree (one line per axis; the value used is named)."""
    study: str = ""
    metadata_channel: str = ""
    prediction_mark: str = ""
    """fusemycell's provenance mark when the file is one of its predictions (never ground truth), else ""."""
    noise_sigma: float = float("nan")
    """The noise standard deviation in grey levels, on a few evenly spaced planes (:mod:`.noise`)."""
    percentiles: dict[str, float] = field(default_factory=dict)
    minimum: float = float("nan")
    maximum: float = float("nan")
    mean: float = float("nan")
    nonfinite: int = 0
    foreground_threshold: float = float("nan")
    foreground_fraction: float = float("nan")
    profile_z: list[float] = field(default_factory=list)
    profile_y: list[float] = field(default_factory=list)
    profile_x: list[float] = field(default_factory=list)
    projections: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    digest: str = ""
    """Content fingerprint (:mod:`fusemycell.io.digest`): tells this file from another of the same name."""

    @property
    def is_constant(self) -> bool:
        """True when every finite voxel has the same value."""
        return self.error is None and self.minimum == self.maximum

    def percentile(self, q: float) -> float:
        """A recorded percentile."""
        return self.percentiles[_percentile_key(q)]

    def record(self) -> dict[str, Any]:
        """JSON-ready dict (profiles included, projections left out)."""
        values = asdict(self)
        values.pop("projections")
        values["shape"] = list(self.shape)
        values["spacing_zyx"] = list(self.spacing_zyx)
        return values

    def row(self) -> dict[str, Any]:
        """One flat table row of the scalar fields."""
        row: dict[str, Any] = {
            "name": self.name,
            "pair": self.pair,
            "kind": self.kind,
            "channel": self.channel,
            "study": self.study,
            "error": self.error or "",
            "dtype": self.dtype,
            "spacing_found": self.spacing_found,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "mean": self.mean,
            "nonfinite": self.nonfinite,
            "foreground_threshold": self.foreground_threshold,
            "foreground_fraction": self.foreground_fraction,
            "noise_sigma": self.noise_sigma,
        }
        for axis, size in zip("zyx", self.shape or (None, None, None)):
            row[f"size_{axis}"] = size
        for axis, spacing in zip("zyx", self.spacing_zyx or (None, None, None)):
            row[f"spacing_{axis}_um"] = spacing
        row.update({f"p{key}": value for key, value in self.percentiles.items()})
        return row


def _percentile_key(q: float) -> str:
    return f"{q:g}".replace(".", "_")


def _block_max(image: np.ndarray, side: int) -> np.ndarray:
    """Downsample a 2D image by block maxima so its longer side is at most ``side``."""
    factor = max(1, int(np.ceil(max(image.shape) / side)))
    if factor == 1:
        return image
    height = int(np.ceil(image.shape[0] / factor)) * factor
    width = int(np.ceil(image.shape[1] / factor)) * factor
    padded = np.full((height, width), -np.inf, dtype=np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded.reshape(height // factor, factor, width // factor, factor).max(axis=(1, 3))


def scan_volume(
    path: str,
    *,
    pair: str,
    kind: str,
    channel: str,
    slab_depth: int = 16,
    percentiles: Sequence[float] = FINGERPRINT_PERCENTILES,
    projection_side: int = 256,
) -> VolumeScan:
    """Fingerprint one file, reading ``slab_depth`` z-planes at a time.

    A file that cannot be read gives a scan with ``error`` set instead of raising,
    so one bad file never hides the problems of the others.
    """
    name = volume_stem(os.path.basename(path))  # image_3_nucleus_angle for .tif and .ome.zarr alike
    scan = VolumeScan(name=name, path=str(path), pair=pair, kind=kind, channel=channel)
    try:
        volume = read_volume(path, lazy=True)
        lazy = volume.data
        gathered = _Gathered(lazy.shape, lazy.dtype)
        for z0 in range(0, lazy.shape[0], slab_depth):
            gathered.add(z0, lazy[z0 : z0 + slab_depth])  # one slab in memory at a time
        lazy.close()
    except VolumeFormatError as exc:
        scan.error = str(exc)
        return scan
    scan.shape = tuple(lazy.shape)
    scan.dtype = str(lazy.dtype)
    scan.spacing_zyx = tuple(volume.spacing_zyx)
    scan.spacing_found = lazy.info.spacing_found
    scan.spacing_conflicts = list(lazy.info.spacing_conflicts)
    scan.study = str(volume.metadata.get("study", ""))
    scan.metadata_channel = str(volume.metadata.get("channel", ""))
    scan.prediction_mark = provenance_mark(volume.metadata)
    gathered.describe(scan, percentiles, projection_side)
    return scan


class _Gathered:
    """What a scan gathers slab by slab: the histogram, the digest, mean profiles, maximum projections."""

    def __init__(self, shape: tuple[int, int, int], dtype: Any):
        depth, height, width = shape
        self.histogram = IntensityHistogram(dtype)
        self.digest = ContentDigest(shape, dtype)
        self.profile_z = np.zeros(depth)
        self.sum_y = np.zeros(height)
        self.sum_x = np.zeros(width)
        self.mip_yx = np.full((height, width), -np.inf, dtype=np.float32)
        self.mip_zx = np.empty((depth, width), dtype=np.float32)
        self.mip_zy = np.empty((depth, height), dtype=np.float32)
        self.noise_planes = set(plane_indices(depth))
        self.plane_sigmas: list[float] = []

    def add(self, z0: int, slab: np.ndarray) -> None:
        """Planes ``z0 ...`` of the volume."""
        self.histogram.add(slab)
        self.digest.add_slab(z0, slab)
        for index in sorted(self.noise_planes & set(range(z0, z0 + len(slab)))):
            sigma = plane_noise(slab[index - z0])
            if sigma is not None:
                self.plane_sigmas.append(sigma)
        if slab.dtype.kind == "f":
            slab = np.where(np.isfinite(slab), slab, 0).astype(np.float64)
        self.profile_z[z0 : z0 + len(slab)] = slab.mean(axis=(1, 2))
        self.sum_y += slab.sum(axis=(0, 2))
        self.sum_x += slab.sum(axis=(0, 1))
        np.maximum(self.mip_yx, slab.max(axis=0), out=self.mip_yx)
        self.mip_zx[z0 : z0 + len(slab)] = slab.max(axis=1)
        self.mip_zy[z0 : z0 + len(slab)] = slab.max(axis=2)

    def describe(self, scan: VolumeScan, percentiles: Sequence[float], projection_side: int) -> None:
        """Fill ``scan``'s statistics, profiles and projections from what was gathered."""
        histogram = self.histogram
        depth, height, width = len(self.profile_z), len(self.sum_y), len(self.sum_x)
        threshold = histogram.otsu_threshold()
        scan.digest = self.digest.hexdigest()
        values = histogram.percentiles(list(percentiles))
        scan.percentiles = {_percentile_key(q): v for q, v in zip(percentiles, values)}
        scan.minimum, scan.maximum = histogram.minimum, histogram.maximum
        scan.mean = histogram.mean
        scan.nonfinite = histogram.nonfinite
        scan.noise_sigma = float(np.median(self.plane_sigmas)) if self.plane_sigmas else float("nan")
        scan.foreground_threshold = threshold
        scan.foreground_fraction = histogram.fraction_above(threshold)
        scan.profile_z = self.profile_z.tolist()
        scan.profile_y = (self.sum_y / (depth * width)).tolist()
        scan.profile_x = (self.sum_x / (depth * height)).tolist()
        scan.projections = {
            "yx": _block_max(self.mip_yx, projection_side),
            "zx": _block_max(self.mip_zx, projection_side),
            "zy": _block_max(self.mip_zy, projection_side),
        }


def _scan_job(job: dict[str, Any]) -> VolumeScan:
    return scan_volume(**job)


def scan_volumes(jobs: Sequence[dict[str, Any]], workers: int | None = None) -> list[VolumeScan]:
    """Run :func:`scan_volume` for every job (its keyword arguments), in ``workers`` processes.

    ``workers=None`` uses every CPU core available to this process.
    """
    workers = available_cores() if workers is None else max(1, int(workers))
    description = "fingerprinting volumes"
    if workers == 1 or len(jobs) <= 1:
        return [_scan_job(job) for job in track(jobs, description, unit="file")]
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        return list(track(pool.map(_scan_job, jobs), description, total=len(jobs), unit="file"))


def available_cores() -> int:
    """CPU cores this process may use (respects affinity masks and container limits where visible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def dataset_summary(scans: Sequence[VolumeScan]) -> list[dict[str, Any]]:
    """Median shape and spacing per (study, channel, kind), over the readable volumes."""
    groups: dict[tuple[str, str, str], list[VolumeScan]] = {}
    for scan in scans:
        if scan.error is None:
            groups.setdefault((scan.study, scan.channel, scan.kind), []).append(scan)
    rows = []
    for (study, channel, kind), members in sorted(groups.items()):
        shapes = np.array([m.shape for m in members], dtype=float)
        spacings = np.array([m.spacing_zyx for m in members], dtype=float)
        row: dict[str, Any] = {"study": study, "channel": channel, "kind": kind, "volumes": len(members)}
        for index, axis in enumerate("zyx"):
            row[f"median_size_{axis}"] = float(np.median(shapes[:, index]))
        for index, axis in enumerate("zyx"):
            row[f"median_spacing_{axis}_um"] = float(np.median(spacings[:, index]))
        row["median_foreground_fraction"] = float(np.median([m.foreground_fraction for m in members]))
        rows.append(row)
    return rows
