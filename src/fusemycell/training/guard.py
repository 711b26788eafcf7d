"""The guard: a trained model never scores below its own starting point on whole validation volumes.

The default network is residual: it predicts a correction added to a base (the input, or its
Gaussian blur: the public baseline). N_SSIM is dominated by outliers, and a correction learnt on
a short budget can make some volumes worse than the base. The guard scales the correction,
``output = base + s * correction``, with ``s`` chosen among :data:`GUARD_SCALES` by the
challenge's own score, the mean over channels of the mean N_SSIM of whole validation volumes
predicted with the inference tiling. ``s = 0`` is the base itself (N_SSIM 0 for the identity,
the blur baseline's score for a blur), so on validation the guarded model is never below it.
The scale is part of the architecture (:attr:`fusemycell.models.config.UNetConfig.residual_scale`):
the saved model, its ONNX export and every consumer of the card apply it.

Because blending is linear, two predictions per volume (the correction at ``s = 1`` and the
base) give every candidate scale exactly. No Kedro import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fusemycell.inference.predictor import TorchBackend, predict_volume, read_all
from fusemycell.inference.tiling import TileSettings
from fusemycell.io.formats import read_volume
from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim
from fusemycell.models.card import GuardSummary, ModelCard
from fusemycell.models.checkpoint import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.position import PositionChannels, PositionField, position_field

logger = logging.getLogger(__name__)

#: Candidate scales of the learnt correction (0 = the residual base alone, 1 = the network as trained).
GUARD_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class ValidationVolume:
    """One whole validation volume, percentile-normalised: the single view and its fused target."""

    name: str
    channel: str
    angle: np.ndarray
    fused: np.ndarray
    position: PositionField | None = None
    """The position channels of ``angle`` (computed on the whole volume), when the model takes them."""
    study: str = ""
    """The study (acquisition series) the volume belongs to."""


@dataclass
class GuardChoice:
    """The chosen scale and, for every candidate, the mean N_SSIM per channel and per study."""

    scale: float
    scores: dict[float, dict[str, float]] = field(default_factory=dict)
    per_volume: dict[str, dict[float, float]] = field(default_factory=dict)
    by_study: dict[float, dict[str, float]] = field(default_factory=dict)

    def score(self, scale: float) -> float:
        """Mean over channels of the per-channel mean N_SSIM at ``scale``."""
        return float(np.mean(list(self.scores[scale].values())))

    def keeps_every_study(self, scale: float, tolerance: float = 1e-6) -> bool:
        """No study's mean N_SSIM at ``scale`` is below its residual base's (scale 0)."""
        base = self.by_study.get(0.0, {})
        return all(value >= base.get(study, value) - tolerance for study, value in self.by_study[scale].items())


def _nssim(prediction: np.ndarray, target: np.ndarray, ssim_input: float, target_stats: object) -> float:
    value = ssim(prediction, target, statistics=(image_statistics(prediction), target_stats))
    return normalized_ssim(value, ssim_input)


def _reference(volume: ValidationVolume, known_ssim_input: dict[str, float] | None = None) -> tuple[object, float]:
    """The target's SSIM statistics and SSIM(input, target), the reference of N_SSIM (from ``known_ssim_input``
    when it has the volume, then kept there)."""
    target_stats = image_statistics(volume.fused)
    if known_ssim_input is not None and volume.name in known_ssim_input:
        return target_stats, known_ssim_input[volume.name]
    ssim_input = ssim(volume.angle, volume.fused, statistics=(image_statistics(volume.angle), target_stats))
    if known_ssim_input is not None:
        known_ssim_input[volume.name] = ssim_input
    return target_stats, ssim_input


def choose_scale(
    volumes: Iterable[ValidationVolume],
    predict: Callable[[ValidationVolume], np.ndarray],
    base: Callable[[np.ndarray], np.ndarray],
    scales: Sequence[float] = GUARD_SCALES,
) -> GuardChoice:
    """Score every scale on every volume; the best mean over channels wins among the scales for which no
    study scores below its residual base (scale 0, always allowed; ties: the smaller scale).

    ``predict`` gives the network's output at scale 1 for a volume (with the inference tiling),
    ``base`` the residual base of its single view; the output at scale ``s`` is ``base + s * (predict - base)``.
    """
    by_channel: dict[float, dict[str, list[float]]] = {s: {} for s in scales}
    by_study: dict[float, dict[str, list[float]]] = {s: {} for s in scales}
    per_volume: dict[str, dict[float, float]] = {}
    for volume in volumes:
        full, start = predict(volume), base(volume.angle)
        correction = full - start
        target_stats, ssim_input = _reference(volume)
        per_volume[volume.name] = {}
        for scale in scales:
            score = _nssim(start + np.float32(scale) * correction, volume.fused, ssim_input, target_stats)
            by_channel[scale].setdefault(volume.channel, []).append(score)
            by_study[scale].setdefault(volume.study, []).append(score)
            per_volume[volume.name][scale] = score
    if not per_volume:
        raise ValueError("the guard needs at least one validation volume")
    scores = {s: {c: float(np.mean(v)) for c, v in channels.items()} for s, channels in by_channel.items()}
    studies = {s: {c: float(np.mean(v)) for c, v in groups.items()} for s, groups in by_study.items()}
    choice = GuardChoice(scale=0.0, scores=scores, per_volume=per_volume, by_study=studies)
    allowed = [s for s in scales if s == 0.0 or choice.keeps_every_study(s)]
    choice.scale = max(allowed or [min(scales)], key=lambda s: (round(choice.score(s), 6), -s))
    return choice


@dataclass(frozen=True)
class VolumeValidation:
    """Whole validation volumes and the inference tiling that predicts them (picklable for DDP workers).

    Iterating reads the volumes again, one at a time (:func:`read_validation_volumes`): memory holds one
    volume's central block whatever the number of volumes.
    """

    pairs: tuple[tuple[str, ...], ...]
    """``(name, channel, angle path, fused path[, study])`` of preprocessed (normalised) volumes."""
    tiling: TileSettings = TileSettings()
    """The inference tiling (``params:inference``): validation predicts as inference does."""
    amp: bool = True
    """Mixed precision where the device gains from it, as inference."""
    ssim_input: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    """SSIM(input, target) by volume, the same every epoch: computed on the first scoring, then reused."""

    def volumes(self, position: PositionChannels | None) -> Iterator[ValidationVolume]:
        """The volumes, with ``position`` channels (the model card's)."""
        return read_validation_volumes(self.pairs, position)


def predict_validation_volume(
    volume: ValidationVolume, backend: TorchBackend, card: ModelCard, tiling: TileSettings
) -> np.ndarray:
    """The prediction of one whole validation volume as inference makes it (the card's tiling), float32."""
    stream = predict_volume(
        volume.angle,
        backend,
        card.architecture,
        tiling,
        blend_tile=tiling.tile_zyx or card.default_tile_zyx,
        position=volume.position,
        progress=False,  # every epoch: its log line says enough
    )
    return read_all(stream)


def volume_nssim(
    network: torch.nn.Module,
    validation: VolumeValidation,
    card: ModelCard,
    device: torch.device | str = "cpu",
) -> tuple[float, dict[str, float]]:
    """The challenge's N_SSIM of ``network`` on whole validation volumes: mean over channels, and per channel.

    Predicted as inference does (the card's tiling: exact for tile-invariant networks, else blended
    tiles; ``validation.amp``); the network is left in evaluation mode.
    """
    backend = TorchBackend(network, str(device), amp=validation.amp)
    by_channel: dict[str, list[float]] = {}
    for volume in validation.volumes(card.position):
        prediction = predict_validation_volume(volume, backend, card, validation.tiling)
        target_stats, ssim_input = _reference(volume, validation.ssim_input)
        by_channel.setdefault(volume.channel, []).append(_nssim(prediction, volume.fused, ssim_input, target_stats))
    if not by_channel:
        raise ValueError("whole-volume validation needs at least one validation volume")
    means = {channel: float(np.mean(values)) for channel, values in by_channel.items()}
    return float(np.mean(list(means.values()))), means


#: Largest block of a validation volume the guard predicts (its centre): bounded memory on GB volumes.
GUARD_BLOCK_ZYX = (64, 512, 512)


def central_block(volume: np.ndarray, block: Sequence[int] = GUARD_BLOCK_ZYX) -> tuple[slice, ...]:
    """The slices of the centre of ``volume``, at most ``block`` voxels per axis."""
    return tuple(slice((n - min(n, b)) // 2, (n - min(n, b)) // 2 + min(n, b)) for n, b in zip(volume.shape, block))


def guard_model(
    model: TrainedModel,
    volumes: Iterable[ValidationVolume],
    *,
    tiling: TileSettings,
    device: str = "auto",
    amp: bool = True,
) -> tuple[TrainedModel, GuardChoice | None]:
    """The model with its correction scaled by :func:`choose_scale`; unchanged when it is not residual.

    Validation volumes are predicted as inference does (``tiling``, ``amp``) on the network as
    trained (``residual_scale`` 1).
    """
    architecture = model.card.architecture
    if not architecture.has_residual:
        logger.info("guard: the network is not residual, nothing to scale")
        return model, None
    network = model.network
    backend = TorchBackend(network, device, amp=amp)

    def predict(volume: ValidationVolume) -> np.ndarray:
        return predict_validation_volume(volume, backend, model.card, tiling)

    def base(angle: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(angle, dtype=np.float32))[None, None]
            return network.residual_base(tensor.to(backend.device)).float().cpu().numpy()[0, 0]

    choice = choose_scale(volumes, predict, base)
    scaled = architecture.model_copy(update={"residual_scale": architecture.residual_scale * choice.scale})
    summary = GuardSummary(
        scale=choice.scale,
        val_nssim={f"{s:g}": choice.score(s) for s in choice.scores},
        val_nssim_by_channel=choice.scores[choice.scale],
        val_nssim_by_study={study: choice.by_study[choice.scale][study] for study in choice.by_study[choice.scale]},
        base_nssim_by_study=choice.by_study.get(0.0, {}),
        volumes=len(choice.per_volume),
    )
    card = model.card.model_copy(update={"architecture": scaled, "guard": summary})
    guarded = TrainedModel(UNet3D(scaled), card)
    guarded.network.load_state_dict(network.state_dict())
    logger.info(
        "guard: correction scale %g chosen on %d validation volumes (N_SSIM %s; at %g by study: %s)",
        choice.scale,
        len(choice.per_volume),
        ", ".join(f"{s:g}: {choice.score(s):.4f}" for s in choice.scores),
        choice.scale,
        ", ".join(f"{study or '?'} {value:.4f}" for study, value in sorted(choice.by_study[choice.scale].items())),
    )
    return guarded, choice


def read_validation_volumes(
    pairs: Iterable[tuple[str, ...]], position: PositionChannels | None = None
) -> Iterator[ValidationVolume]:
    """``(name, channel, angle path, fused path[, study])`` of preprocessed (normalised) volumes -> their
    central blocks.

    Read lazily, one pair at a time: a pass over GB volumes costs a block each. With ``position``
    (the model card's), each block carries the position channels of the whole single view.
    """
    for name, channel, angle_path, fused_path, *study in pairs:
        volume = read_volume(angle_path, lazy=True)
        angle = volume.data
        block = central_block(angle)
        field = None
        if position is not None:
            field = position_field(angle, volume.spacing_zyx, position, name=angle_path)
            field = field.block([s.start for s in block])
        fused = read_volume(fused_path, lazy=True).data
        yield ValidationVolume(
            name,
            channel,
            np.asarray(angle[block], np.float32),
            np.asarray(fused[block], np.float32),
            field,
            study=str(study[0]) if study else "",
        )
