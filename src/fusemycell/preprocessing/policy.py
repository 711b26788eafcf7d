"""The preprocessing policy as columns of the preprocessing table, written and read back by one definition.

Preprocessing writes, on every row of ``02_intermediate/preprocessing.csv``, the policy it applied to every
volume (normalisation percentiles, crop, resampling target); patching reads it back to carry it to the model
card. Both sides use :func:`policy_columns` and :func:`policy_from_columns`, so a column added, renamed or
typed differently is changed in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fusemycell.preprocessing.config import CropParams, NormalizationParams

#: Column -> how it is read back (the table goes through CSV: every value comes back as text or a number).
_NORMALIZATION = {"norm_p_low": "low_percentile", "norm_p_high": "high_percentile"}
_CROP = {"crop_enabled": "enabled", "crop_threshold": "threshold", "crop_margin_um": "margin_um"}
_TARGET = tuple(f"resample_target_{axis}_um" for axis in "zyx")
#: Every column of the policy, in the order they are written.
POLICY_COLUMNS = (*_NORMALIZATION, *_CROP, *_TARGET)


def policy_columns(
    normalization: NormalizationParams, crop: CropParams, target_zyx: Sequence[float] | None
) -> dict[str, Any]:
    """The policy as the table's columns; no resampling target is written as NaN on each axis."""
    return {
        **{column: getattr(normalization, field) for column, field in _NORMALIZATION.items()},
        **{column: getattr(crop, field) for column, field in _CROP.items()},
        **{column: float(target_zyx[i]) if target_zyx else float("nan") for i, column in enumerate(_TARGET)},
    }


def _flag(value: Any) -> bool:
    """A boolean written to CSV and read back (``True``, ``"True"``, ``1``, ``"false"`` ...)."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def policy_from_columns(
    row: Mapping[str, Any],
) -> tuple[NormalizationParams, CropParams, tuple[float, float, float] | None]:
    """The policy of one table row (normalisation, crop, resampling target or None).

    Raises
    ------
    ValueError
        When the row lacks policy columns (a table written by an older fusemycell).
    """
    missing = [column for column in POLICY_COLUMNS if column not in row]
    if missing:
        raise ValueError(
            f"the preprocessing table has no column {', '.join(missing)} (written by an older fusemycell); "
            "run 'kedro run --pipelines preprocessing' again"
        )
    normalization = NormalizationParams(**{field: float(row[column]) for column, field in _NORMALIZATION.items()})
    crop = CropParams(
        enabled=_flag(row["crop_enabled"]),
        threshold=float(row["crop_threshold"]),
        margin_um=float(row["crop_margin_um"]),
    )
    target = tuple(float(row[column]) for column in _TARGET)
    return normalization, crop, None if any(math.isnan(t) for t in target) else target  # type: ignore[return-value]
