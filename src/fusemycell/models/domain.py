"""The training domain: the range of acquisitions a model was trained on, and an input checked against it.

A network trained on 1 um planes has never seen 3 um planes; on such an input its prediction can be
worse than the input itself, and nothing in the prediction says so. The model card therefore records
a :class:`TrainingDomain` (ranges per property over the training and validation volumes: voxel size,
shape, raw intensity percentiles, a noise estimate), and every consumer measures its input
(:class:`InputMeasurement`, :func:`measure_planes`) and asks :meth:`TrainingDomain.departures` which
properties lie outside, each as one plain sentence.

"Outside" has a tolerance per property (:data:`TOLERANCES`), so that an input close to the training
range is not flagged:

- voxel size: beyond 10 % of the range's ends (``value < low / 1.1`` or ``value > 1.1 * high``);
- shape: only far outside, beyond a factor 2 (the network is convolutional: size alone matters little);
- raw intensity percentiles (2 and 99.8, the normalisation's): beyond a factor 2, and at least 10 grey
  levels away (a background at 3 is not outside one at 0);
- noise (relative, see :func:`relative_noise`): beyond a factor 2, and at least 0.01 away.

No Kedro import; no file is read here except by :func:`measure_file`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from fusemycell.configuration import StrictConfig
from fusemycell.preprocessing.noise import MEASURED_PLANES, noise_sigma, plane_indices

__all__ = ["MEASURED_PLANES", "plane_indices"]  # re-exported: where an input's planes are measured

#: Percentiles of the raw intensities recorded in the domain (keys as the fingerprint writes them).
DOMAIN_PERCENTILES = ("0_1", "2", "50", "99_8", "99_9")
#: Percentiles an input is checked on: the normalisation's (the others are recorded for readers).
CHECKED_PERCENTILES = ("2", "99_8")


@dataclass(frozen=True)
class Tolerance:
    """How far outside a training range a value may lie before it is flagged.

    ``factor``: the range's ends are widened to ``low / factor`` and ``high * factor``; ``slack``: and by
    at least this much (in the property's unit).
    """

    factor: float
    slack: float = 0.0

    def widened(self, low: float, high: float) -> tuple[float, float]:
        """The accepted interval around ``[low, high]``."""
        return min(low / self.factor, low - self.slack), max(high * self.factor, high + self.slack)


#: The tolerance of each kind of property (see the module docstring).
TOLERANCES = {
    "voxel size": Tolerance(1.1),
    "size": Tolerance(2.0),
    "intensity": Tolerance(2.0, slack=10.0),
    "noise": Tolerance(2.0, slack=0.01),
}


class ValueRange(StrictConfig):
    """The smallest and largest value of a property over the training volumes."""

    low: float
    """Smallest value."""
    high: float
    """Largest value."""

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.low > self.high:
            raise ValueError(f"a range's low end ({self.low}) is above its high end ({self.high})")
        return self

    @classmethod
    def of(cls, values: Iterable[float]) -> ValueRange:
        """The range of ``values`` (finite ones; at least one)."""
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            raise ValueError("a range needs at least one finite value")
        return cls(low=min(finite), high=max(finite))

    def text(self, unit: str = "") -> str:
        """``1.0-2.0 um`` (one value when both ends agree)."""
        span = _number(self.low) if self.low == self.high else f"{_number(self.low)}-{_number(self.high)}"
        return f"{span}{' ' + unit if unit else ''}"


def _number(value: float) -> str:
    """A value as people write it: 3.0, 0.39, 1920, 0.0123."""
    if float(value).is_integer():
        return f"{int(value)}" if abs(value) >= 10 else f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


@dataclass(frozen=True)
class Departure:
    """One property of an input outside the training range."""

    property: str
    """What is outside, in words: ``voxel size z``, ``plane count``, ``intensity p99.8``, ``noise``."""
    value: float
    training: ValueRange
    unit: str = ""

    def sentence(self) -> str:
        """``voxel size z 3.0 um is outside the training range 1.0-2.0 um``."""
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"{self.property} {_number(self.value)}{unit} is outside the training range {self.training.text(self.unit)}"
        )

    def record(self) -> dict[str, object]:
        """JSON-ready: property, value, unit and the training range."""
        return {
            "property": self.property,
            "value": self.value,
            "unit": self.unit,
            "training_low": self.training.low,
            "training_high": self.training.high,
        }


@dataclass(frozen=True)
class InputMeasurement:
    """What is measured on one input to compare it with the training domain (None: not known)."""

    spacing_zyx: tuple[float, float, float] | None = None
    """Voxel size, micrometres (None: not known, e.g. a napari layer without a scale)."""
    shape_zyx: tuple[int, int, int] | None = None
    """Shape, voxels."""
    percentiles: Mapping[str, float] = field(default_factory=dict)
    """Raw intensity percentiles, keyed as :data:`DOMAIN_PERCENTILES`."""
    noise: float | None = None
    """Relative noise (:func:`relative_noise`)."""


_AXES = "zyx"
_SIZE_NAMES = ("plane count", "height", "width")


class TrainingDomain(StrictConfig):
    """The range of each property over the training and validation volumes (raw single views)."""

    volumes: int = Field(ge=1)
    """Single views it was measured on."""
    spacing_zyx_um: tuple[ValueRange, ValueRange, ValueRange]
    """Voxel size per axis (z, y, x), micrometres."""
    shape_zyx: tuple[ValueRange, ValueRange, ValueRange]
    """Shape per axis (z, y, x), voxels."""
    percentiles: dict[str, ValueRange] = Field(default_factory=dict)
    """Raw intensity percentiles (grey levels), keyed like the fingerprint: ``2``, ``99_8``, ..."""
    noise: ValueRange | None = None
    """Relative noise (:func:`relative_noise`); null when it could not be measured."""

    def departures(self, measured: InputMeasurement) -> list[Departure]:
        """The properties of ``measured`` outside this domain, beyond their tolerance (:data:`TOLERANCES`)."""
        found: list[Departure] = []
        if measured.spacing_zyx is not None:
            for axis, value, training in zip(_AXES, measured.spacing_zyx, self.spacing_zyx_um):
                found += _outside(f"voxel size {axis}", value, training, "voxel size", "um")
        if measured.shape_zyx is not None:
            for name, value, training in zip(_SIZE_NAMES, measured.shape_zyx, self.shape_zyx):
                found += _outside(name, value, training, "size", "voxels")
        for key in CHECKED_PERCENTILES:
            if key in measured.percentiles and key in self.percentiles:
                label = f"intensity p{key.replace('_', '.')}"
                found += _outside(label, measured.percentiles[key], self.percentiles[key], "intensity", "grey levels")
        if measured.noise is not None and self.noise is not None:
            found += _outside("noise (relative)", measured.noise, self.noise, "noise")
        return found


def _outside(label: str, value: float, training: ValueRange, kind: str, unit: str = "") -> list[Departure]:
    low, high = TOLERANCES[kind].widened(training.low, training.high)
    if not math.isfinite(float(value)) or low <= float(value) <= high:
        return []
    return [Departure(label, float(value), training, unit)]


def relative_noise(planes: np.ndarray, low: float, high: float) -> float | None:
    """The noise of ``planes`` (z, y, x) (:mod:`fusemycell.preprocessing.noise`) as a share of the
    normalisation range ``high - low`` (p99.8 - p2): what the network sees (the input is normalised),
    whatever the camera's gain. 0 means that most neighbours have the same grey level (noise below one
    level); None when the range is empty."""
    if high <= low:
        return None
    sigma = noise_sigma(planes)
    return None if sigma is None else sigma / (high - low)


def measure_planes(planes: np.ndarray) -> tuple[dict[str, float], float | None]:
    """Raw percentiles (:data:`DOMAIN_PERCENTILES`) and relative noise of a few planes ``(n, y, x)``."""
    values = np.asarray(planes, dtype=np.float32)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if finite.size == 0:
        return {}, None
    qs = [float(key.replace("_", ".")) for key in DOMAIN_PERCENTILES]
    levels = np.percentile(finite, qs)
    percentiles = {key: float(v) for key, v in zip(DOMAIN_PERCENTILES, levels)}
    clean = np.where(np.isfinite(values), values, 0.0)
    return percentiles, relative_noise(clean, percentiles["2"], percentiles["99_8"])


def measure_array(
    volume: np.ndarray, spacing_zyx: Sequence[float] | None, count: int = MEASURED_PLANES
) -> InputMeasurement:
    """The measurement of a ZYX volume (an array, or a lazy one that reads what is sliced)."""
    shape = tuple(int(s) for s in volume.shape)
    planes = np.stack([np.asarray(volume[z]) for z in plane_indices(shape[0], count)])
    percentiles, noise = measure_planes(planes)
    spacing = tuple(float(s) for s in spacing_zyx) if spacing_zyx is not None else None
    return InputMeasurement(spacing, shape, percentiles, noise)  # type: ignore[arg-type]


def measure_file(path: str, count: int = MEASURED_PLANES) -> InputMeasurement:
    """The measurement of a volume file: its header's voxel size and shape, ``count`` of its planes."""
    from fusemycell.io.formats import read_volume

    volume = read_volume(path, lazy=True)
    try:
        return measure_array(volume.data, volume.spacing_zyx, count)
    finally:
        volume.data.close()


def training_domain(
    records: Iterable[Mapping[str, object]], noise: Mapping[str, float | None] | None = None
) -> TrainingDomain | None:
    """The domain of fingerprint records (``spacing_zyx``, ``shape``, ``percentiles`` of each volume).

    ``noise``: the relative noise of each record, by its ``name`` (:func:`measure_file`). None when no
    record is usable (no readable volume).
    """
    usable = [r for r in records if not r.get("error") and len(r.get("shape") or ()) == 3]
    if not usable:
        return None
    spacings = np.array([r["spacing_zyx"] for r in usable], dtype=float)
    shapes = np.array([r["shape"] for r in usable], dtype=float)
    percentiles = {}
    for key in DOMAIN_PERCENTILES:
        values = [float(r["percentiles"][key]) for r in usable if key in (r.get("percentiles") or {})]  # type: ignore[index,operator]
        if values:
            percentiles[key] = ValueRange.of(values)
    noises = [noise.get(str(r["name"])) for r in usable] if noise else []
    measured = [n for n in noises if n is not None and math.isfinite(n)]
    return TrainingDomain(
        volumes=len(usable),
        spacing_zyx_um=tuple(ValueRange.of(spacings[:, i]) for i in range(3)),  # type: ignore[arg-type]
        shape_zyx=tuple(ValueRange.of(shapes[:, i]) for i in range(3)),  # type: ignore[arg-type]
        percentiles=percentiles,
        noise=ValueRange.of(measured) if measured else None,
    )


def domain_of_pairs(records: Iterable[Mapping[str, object]], pairs: Iterable[str]) -> TrainingDomain | None:
    """The domain of the single views (``kind: angle``) of ``pairs`` among fingerprint ``records``.

    Everything comes from the records, the noise included (the fingerprint measures it on
    :data:`MEASURED_PLANES` planes in its one pass over each file, ``noise_sigma``): no file is read.
    A record without it (an older fingerprint) only lacks its noise.
    """
    wanted = set(pairs)
    chosen = [r for r in records if r.get("kind") == "angle" and r.get("pair") in wanted]
    noise: dict[str, float | None] = {}
    for record in chosen:
        sigma, levels = record.get("noise_sigma"), record.get("percentiles") or {}
        low, high = levels.get("2"), levels.get("99_8")  # type: ignore[union-attr]
        usable = isinstance(sigma, int | float) and math.isfinite(sigma) and low is not None and high is not None
        noise[str(record.get("name"))] = float(sigma) / (high - low) if usable and high > low else None  # type: ignore[operator]
    return training_domain(chosen, noise)
