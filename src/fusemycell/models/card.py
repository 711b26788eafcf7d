"""The model card: everything needed to apply a trained network without the training code.

A :class:`ModelCard` is frozen and typed; it is saved with the weights (and in the
ONNX export's metadata) and read in one place,
:meth:`fusemycell.inference.transform.InputTransform.from_card`. A contract that
training writes and inference reads is a field here, so a key that nobody writes
is a type error rather than a silently skipped branch.

Version 1 model files (a free ``metadata`` dict next to the architecture) are
converted on load by :func:`card_from_legacy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from fusemycell import __version__
from fusemycell.configuration import StrictConfig
from fusemycell.io.pairs import CHANNELS, FILENAME_PATTERN
from fusemycell.models.config import UNetConfig
from fusemycell.models.domain import TrainingDomain
from fusemycell.models.receptive_field import receptive_field
from fusemycell.position import PositionChannels
from fusemycell.preprocessing.config import CropParams, NormalizationParams

#: Version of the card's schema; a model file records it.
CARD_VERSION = 2

SizeZYX = tuple[PositiveInt, PositiveInt, PositiveInt]
SpacingZYX = tuple[PositiveFloat, PositiveFloat, PositiveFloat]


class InputChannel(StrictConfig):
    """One channel of the network's input."""

    name: str
    """Short name, e.g. ``single_view``."""
    description: str
    """What the channel holds and on which scale."""


class PreprocessingContract(StrictConfig):
    """What preprocessing did to the training volumes; carried by the patch store's manifest.

    Its parts are preprocessing's own parameter classes (one class per concept, with their checks).
    """

    normalization: NormalizationParams = NormalizationParams()
    """How raw intensities become network input, and how a network output becomes uint16.
    Input: ``(x - p_low) / (p_high - p_low)`` with the input's own percentiles (the challenge's
    normalisation, no clipping). When ``p_low == p_high`` on a volume that is not constant (a dim
    background with a few bright voxels), ``p_high`` falls back to the maximum (and ``p_low`` to the
    minimum if still equal), with a warning naming the file. Output: ``offset + y * scale`` rounded to
    uint16, where ``scale`` is ``p_high - p_low`` stretched to at least ``inference.min_output_range``
    and ``offset`` is ``p_low`` shifted into ``[0, 65535 - scale]`` when it does not fit."""
    crop: CropParams = CropParams(enabled=False)
    """How training volumes were cropped to the specimen; inference uses it with ``crop_to_specimen``
    (not cropped unless recorded)."""
    resample_spacing_zyx: SpacingZYX | None = None
    """Target voxel size of the resampling (micrometres); null = the acquisition grid."""

    @field_validator("crop", mode="before")
    @classmethod
    def _crop_recorded(cls, value: Any) -> Any:
        """A recorded crop without ``enabled`` was not applied (the card's default, not preprocessing's)."""
        if isinstance(value, dict) and "enabled" not in value:
            return {**value, "enabled": False}
        return value


class TrainingDataSummary(StrictConfig):
    """A fingerprint of the volumes the patches were cut from."""

    volumes: int = Field(default=0, ge=0)
    """Train and validation volumes."""
    studies: tuple[str, ...] = ()
    """Studies present."""
    channels: tuple[str, ...] = ()
    """Channels present (``nucleus``, ``membrane``)."""
    acquisition_spacings_zyx: tuple[SpacingZYX, ...] = ()
    """Distinct voxel sizes of the raw volumes, micrometres."""
    shapes_zyx: tuple[SizeZYX, ...] = ()
    """Distinct shapes of the preprocessed volumes, voxels."""
    train_patches: int = Field(default=0, ge=0)
    """Training patches."""
    val_patches: int = Field(default=0, ge=0)
    """Validation patches."""


class ValidationSummary(StrictConfig):
    """Validation metrics of the chosen epoch."""

    epoch: int = Field(ge=1)
    """The chosen epoch."""
    val_nssim: float
    """N_SSIM on the validation patches (input as reference)."""
    val_ssim: float
    """SSIM on the validation patches."""
    val_loss: float | None = None
    """Training loss on the validation patches (not recorded by model file version 1)."""
    val_volume_nssim: float | None = None
    """The challenge's N_SSIM on whole validation volumes (inference tiling), mean per channel; null = not scored."""
    monitor: str | None = None
    """The quantity the epoch was chosen by (``training.monitor``)."""


class TrainingSummary(StrictConfig):
    """How the training budget was spent: what buys quality on a CPU is optimizer steps per minute."""

    epochs: int = Field(ge=0)
    """Epochs trained (the last one may be shortened to end with the time budget)."""
    optimizer_steps: int = Field(ge=0)
    """Optimizer steps taken."""
    patches: int = Field(ge=0)
    """Patches seen (all processes)."""
    minutes: float = Field(ge=0)
    """Wall-clock minutes of training, validation included."""
    steps_per_minute: float = Field(ge=0)
    """Optimizer steps per minute of training steps."""
    patches_per_minute: float = Field(ge=0)
    """Patches per minute of training steps."""
    validation_share: float = Field(ge=0, le=1)
    """Share of the training time spent validating."""
    precision: str = "float32"
    """Arithmetic of the training steps (``bfloat16`` under mixed precision)."""
    planned_steps: int | None = Field(default=None, ge=0)
    """With a time budget: the optimizer steps the learning-rate schedule was last planned on (fewer
    ``optimizer_steps`` than these: the budget cut training short of its schedule)."""
    stopped_by_budget: bool = False
    """The time budget, not the epochs asked for or early stopping, ended training."""


class GuardSummary(StrictConfig):
    """The guard's choice (:mod:`fusemycell.training.guard`): how much of the learnt correction is kept, per channel."""

    scale: float = Field(ge=0, le=1)
    """The most cautious (smallest) of the channels' scales: ``architecture.residual_scale`` holds it (times
    ``unguarded_residual_scale``), and an input whose channel is unknown gets it."""
    scale_by_channel: dict[str, float] = Field(default_factory=dict)
    """The chosen scale per channel: among the candidates that keep every validation study of the channel at
    or above its residual base, the best mean N_SSIM of the channel. Empty on cards from before it: ``scale``
    for every channel."""
    unguarded_residual_scale: float = Field(default=1.0, ge=0, le=1)
    """``architecture.residual_scale`` before the guard; a channel's correction weight is this times its scale."""
    val_nssim: dict[str, float]
    """Mean over channels of the per-channel mean N_SSIM of whole validation volumes, per candidate scale."""
    val_nssim_by_channel: dict[str, float]
    """At each channel's chosen scale, per channel."""
    val_nssim_by_study: dict[str, float] = Field(default_factory=dict)
    """At each volume's channel's chosen scale, per study (no study is left below its base)."""
    base_nssim_by_study: dict[str, float] = Field(default_factory=dict)
    """The residual base's (scale 0) mean N_SSIM per study: what no study may fall below."""
    volumes: int = Field(ge=1)
    """Validation volumes scored."""

    def residual_scale(self, channel: str | None) -> float | None:
        """The correction weight of ``channel`` (None: not a channel the guard chose a scale for)."""
        if channel is None or channel not in self.scale_by_channel:
            return None
        return self.unguarded_residual_scale * self.scale_by_channel[channel]


def channel_of(name: str) -> str | None:
    """The channel a FuseMyCell file name gives (``image_3_nucleus_angle.tif`` -> ``nucleus``); None otherwise."""
    match = FILENAME_PATTERN.match(Path(str(name)).name) or FILENAME_PATTERN.match(Path(str(name)).name + ".tif")
    channel = match["channel"].lower() if match is not None else None
    return channel if channel in CHANNELS else None


def _default_channels() -> tuple[InputChannel, ...]:
    return (
        InputChannel(
            name="single_view",
            description="the single-view acquisition, percentile-normalised (see normalization)",
        ),
    )


class ModelCard(StrictConfig):
    """Everything needed to apply a trained network to a raw single view, without the training code."""

    version: Literal[2] = CARD_VERSION
    """Schema version of the card."""
    fusemycell_version: str = __version__
    """fusemycell release that trained the model."""
    architecture: UNetConfig
    """The network; ``architecture.spacing_zyx`` is the voxel size it was trained at."""
    input_channels: tuple[InputChannel, ...] = Field(default_factory=_default_channels)
    """What each input channel is (one per ``architecture.in_channels``)."""
    position: PositionChannels | None = None
    """How the position channels after the single view are computed (:mod:`fusemycell.position`); null = none."""
    preprocessing: PreprocessingContract = PreprocessingContract()
    """Normalisation, crop policy and resampling target of the training volumes, applied again at inference."""
    patch_size_zyx: SizeZYX = (32, 64, 64)
    """Training patch size, voxels."""
    default_tile_zyx: SizeZYX = (32, 128, 128)
    """Inference tile when ``inference.tile_zyx`` is null (the training patch)."""
    physics: dict[str, float] | None = None
    """Fitted parameters of the single-view forward model, when the physics-informed loss was used."""
    training_data: TrainingDataSummary = TrainingDataSummary()
    """Fingerprint of the training data."""
    training_domain: TrainingDomain | None = None
    """Ranges of voxel size, shape, raw intensity percentiles and noise over the training and validation
    single views (:mod:`fusemycell.models.domain`): inputs outside them are flagged at inference
    (``inference.outside_training``). Null for models trained before it was recorded: nothing is checked."""
    validation: ValidationSummary | None = None
    """Validation metrics of the chosen epoch."""
    training: TrainingSummary | None = None
    """Steps, patches and time of the training run."""
    guard: GuardSummary | None = None
    """The guard's choice on whole validation volumes; null when it did not run (not residual, no volume)."""
    tile_invariant: bool = False
    """A voxel's prediction does not depend on the tile it is computed in (no per-tile statistics): exact
    tiling then equals whole-volume prediction. Derived from ``architecture``; recorded for readers of the card."""
    receptive_field_zyx: SizeZYX = (1, 1, 1)
    """Voxels ``(z, y, x)`` of input that can change one output voxel (``2 * reach + 1``); exact tiling reads
    each tile with a halo of the reach. Derived from ``architecture``."""

    @model_validator(mode="before")
    @classmethod
    def _derived_fields(cls, data: Any) -> Any:
        """``tile_invariant`` and ``receptive_field_zyx`` follow the architecture (a card from before them
        gets them; an edited card cannot contradict its network)."""
        if not isinstance(data, dict) or "architecture" not in data:
            return data
        architecture = data["architecture"]
        if not isinstance(architecture, UNetConfig):
            architecture = UNetConfig.model_validate(architecture)
        return {
            **data,
            "tile_invariant": architecture.tile_invariant,
            "receptive_field_zyx": receptive_field(architecture),
        }

    @field_validator("input_channels")
    @classmethod
    def _some_channel(cls, value: tuple[InputChannel, ...]) -> tuple[InputChannel, ...]:
        if not value:
            raise ValueError("a model has at least one input channel")
        return value

    @model_validator(mode="after")
    def _channels_agree(self) -> ModelCard:
        if len(self.input_channels) != self.architecture.in_channels:
            raise ValueError(
                f"the card lists {len(self.input_channels)} input channels, the network takes "
                f"{self.architecture.in_channels}"
            )
        expected = 1 + (self.position.count if self.position is not None else 0)
        if self.architecture.in_channels != expected:
            raise ValueError(
                f"the network takes {self.architecture.in_channels} input channels, but the single view and the "
                f"card's position channels make {expected}"
            )
        return self

    def architecture_for(self, channel: str | None) -> UNetConfig:
        """The architecture an input of ``channel`` is predicted with: the guard's correction weight of that
        channel (``residual_scale``); an unknown channel (None, or one the guard did not see) gets the
        architecture's own, the smallest."""
        scale = self.guard.residual_scale(channel) if self.guard is not None else None
        if scale is None or scale == self.architecture.residual_scale:
            return self.architecture
        return self.architecture.model_copy(update={"residual_scale": scale})

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Voxel size of the network's input grid (micrometres)."""
        return self.architecture.spacing_zyx

    @property
    def normalization(self) -> NormalizationParams:
        """The intensity mapping (shortcut)."""
        return self.preprocessing.normalization


def tile_for_patch(patch_size_zyx: Sequence[int]) -> tuple[int, int, int]:
    """The training patch size: instance normalisation then sees tiles of the size it was trained on.

    Tiles twice the patch in y and x scored 0.10 against 0.15 test N_SSIM for the patch itself
    (benchmarks/overlap.py, benchmarks/README.md), for four times the tiles.
    """
    return int(patch_size_zyx[0]), int(patch_size_zyx[1]), int(patch_size_zyx[2])


def card_for(architecture: UNetConfig, patch_size_zyx: Sequence[int] = (32, 64, 64), **fields: Any) -> ModelCard:
    """A card for ``architecture`` trained on patches of ``patch_size_zyx`` (other fields as given)."""
    patch = tuple(int(p) for p in patch_size_zyx)
    fields.setdefault("default_tile_zyx", tile_for_patch(patch))
    return ModelCard(architecture=architecture, patch_size_zyx=patch, **fields)


def card_from_legacy(config: dict[str, Any], metadata: dict[str, Any]) -> ModelCard:
    """The card of a version 1 model file (architecture dict + free metadata dict).

    Version 1 wrote no resampling target (inference then ignored resampling), so the
    converted card has none: it predicts exactly as version 1 did.
    """
    normalization = metadata.get("normalization") or {}
    validation = None
    if "best_epoch" in metadata and "val_nssim" in metadata:
        validation = ValidationSummary(
            epoch=int(metadata["best_epoch"]),
            val_nssim=float(metadata["val_nssim"]),
            val_ssim=float(metadata.get("val_ssim", 0.0)),
        )
    patch = metadata.get("patch_size_zyx") or (32, 64, 64)
    return card_for(
        UNetConfig.model_validate({"normalization": "instance", **config}),  # version 1 knew no other default
        patch,
        default_tile_zyx=(int(patch[0]), 2 * int(patch[1]), 2 * int(patch[2])),  # version 1's tile
        fusemycell_version="<=0.1.0 (model file version 1)",
        preprocessing=PreprocessingContract(
            normalization=NormalizationParams(  # what version 1 recorded; its defaults are the challenge's
                **{key: float(value) for key, value in normalization.items() if key.endswith("_percentile")}
            )
        ),
        physics=metadata.get("physics"),
        training_data=TrainingDataSummary(
            train_patches=int(metadata.get("train_patches", 0)), val_patches=int(metadata.get("val_patches", 0))
        ),
        validation=validation,
    )
