"""Typed, validated parameters of the preprocessing pipeline (``params:preprocessing``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fusemycell.configuration import StrictConfig
from fusemycell.normalization import CHALLENGE_PERCENTILES


class NormalizationParams(StrictConfig):
    """Percentile normalisation; the challenge uses 2 and 99.8."""

    low_percentile: float = Field(default=CHALLENGE_PERCENTILES[0], ge=0, lt=100)
    """Percentile mapped to 0."""
    high_percentile: float = Field(default=CHALLENGE_PERCENTILES[1], gt=0, le=100)
    """Percentile mapped to 1."""

    @model_validator(mode="after")
    def _ordered(self) -> NormalizationParams:
        if self.low_percentile >= self.high_percentile:
            raise ValueError(
                f"low_percentile ({self.low_percentile}) must be below high_percentile ({self.high_percentile})"
            )
        return self


class CropParams(StrictConfig):
    """Crop each pair to the specimen's bounding box (replaces a manual ``--z-range``)."""

    enabled: bool = True
    """Crop, or keep the full field of view."""
    threshold: float = Field(default=0.05, ge=0, lt=1)
    """Profile level, between background (0) and peak (1), above which a plane counts as specimen."""
    margin_um: float = Field(default=4.0, ge=0)
    """Margin kept around the specimen on every side."""


class ResampleParams(StrictConfig):
    """Resampling to a target voxel size (linear); the model card carries it to inference, which resamples
    every input to it and the prediction back to the input's grid."""

    enabled: bool | Literal["auto"] = "auto"
    """``auto`` (the default): the fingerprint chooses the target from the training volumes' voxel sizes
    (nnU-Net's rule, :func:`fusemycell.preprocessing.resample.target_spacing`); ``true``: resample to
    ``target_spacing_zyx``; ``false``: keep each acquisition's grid. The prediction always goes back to
    the input's grid (the challenge scores there). ``auto`` won the leave-one-study-out rows of
    ``docs/benchmarks.md``."""
    target_spacing_zyx: tuple[float, float, float] | None = None
    """Voxel size after resampling, micrometres (e.g. isotropic [1, 1, 1]): given, it is the target (with
    ``enabled: true`` or ``auto``); null with ``auto``: the fingerprint chooses."""

    @model_validator(mode="after")
    def _target_given(self) -> ResampleParams:
        if self.enabled is True and (self.target_spacing_zyx is None or min(self.target_spacing_zyx) <= 0):
            raise ValueError("resample.enabled: true needs target_spacing_zyx, three sizes > 0 in micrometres")
        return self


class SplitParams(StrictConfig):
    """Train/validation/test split by volume, stratified by channel and study."""

    seed: int = 2025
    """Seed of the shuffle; the same seed and volumes give the same split."""
    val_fraction: float = Field(default=0.17, ge=0, lt=1)
    """Share of volumes for validation."""
    test_fraction: float = Field(default=0.34, ge=0, lt=1)
    """Share of volumes held out for evaluation; never seen by patching or training."""
    min_per_split: int = Field(default=1, ge=0)
    """At least this many volumes in validation and in test (when there are 3 volumes or more)."""
    test_studies: tuple[str, ...] = ()
    """Studies held out whole for evaluation (leave-one-study-out: a study the model never trained on,
    the test real users meet); their volumes are all test, and ``test_fraction`` applies to the others
    (set it to 0 to test on these studies alone)."""

    @model_validator(mode="after")
    def _leaves_training(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave volumes for training (< 1)")
        return self


class PreprocessingConfig(StrictConfig):
    """Everything the preprocessing pipeline needs."""

    workers: int | None = Field(default=None, ge=1)
    """Processes for per-volume work; null = every CPU core."""
    on_invalid: Literal["fail", "skip"] = "fail"
    """What to do with pairs that fail validation: stop listing every problem, or leave them out."""
    slab_depth: int = Field(default=16, ge=1)
    """z-planes read at a time; memory per worker is about one slab."""
    spacing_tolerance: float = Field(default=0.01, ge=0)
    """Relative difference allowed between the angle's and the fused volume's voxel sizes."""
    output_dtype: Literal["float32", "float16"] = "float32"
    """Type of the normalised volumes in 02_intermediate."""
    projection_side: int = Field(default=256, ge=16)
    """Longest side of the maximum projections in the fingerprint figures."""
    normalization: NormalizationParams = NormalizationParams()
    crop: CropParams = CropParams()
    resample: ResampleParams = ResampleParams()
    split: SplitParams = SplitParams()
