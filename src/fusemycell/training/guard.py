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
base) give every candidate scale exactly. The prediction is a function the caller gives
(:class:`~fusemycell.training.volumes.VolumePredictor`): training does not import inference.
No Kedro import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fusemycell.devices import resolve_device
from fusemycell.models.card import GuardSummary
from fusemycell.models.checkpoint import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.training.volumes import ValidationVolume, VolumePredictor, reference, volume_nssim_of

logger = logging.getLogger(__name__)

#: Candidate scales of the learnt correction (0 = the residual base alone, 1 = the network as trained).
GUARD_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)


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
        target_stats, ssim_input = reference(volume)
        per_volume[volume.name] = {}
        for scale in scales:
            score = volume_nssim_of(start + np.float32(scale) * correction, volume.fused, ssim_input, target_stats)
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


def guard_model(
    model: TrainedModel,
    volumes: Iterable[ValidationVolume],
    *,
    predict: VolumePredictor,
    device: str = "auto",
) -> tuple[TrainedModel, GuardChoice | None]:
    """The model with its correction scaled by :func:`choose_scale`; unchanged when it is not residual.

    Validation volumes are predicted with ``predict`` (the inference tiling and precision) on the
    network as trained (``residual_scale`` 1), on ``device`` (a ``training.device``-like name).
    """
    architecture = model.card.architecture
    if not architecture.has_residual:
        logger.info("guard: the network is not residual, nothing to scale")
        return model, None
    network = model.network
    where = resolve_device(device, setting="inference.device")
    network.to(where).eval()

    def predict_at_scale_one(volume: ValidationVolume) -> np.ndarray:
        return predict(network, model.card, volume.angle, volume.position, where)

    def base(angle: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(angle, dtype=np.float32))[None, None]
            return network.residual_base(tensor.to(where)).float().cpu().numpy()[0, 0]

    choice = choose_scale(volumes, predict_at_scale_one, base)
    guarded = _scaled(model, choice)
    logger.info(
        "guard: correction scale %g chosen on %d validation volumes (N_SSIM %s; at %g by study: %s)",
        choice.scale,
        len(choice.per_volume),
        ", ".join(f"{s:g}: {choice.score(s):.4f}" for s in choice.scores),
        choice.scale,
        ", ".join(f"{study or '?'} {value:.4f}" for study, value in sorted(choice.by_study[choice.scale].items())),
    )
    return guarded, choice


def _scaled(model: TrainedModel, choice: GuardChoice) -> TrainedModel:
    """The model with ``residual_scale`` multiplied by the chosen scale, the guard's summary on its card."""
    architecture = model.card.architecture
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
    guarded.network.load_state_dict(model.network.state_dict())
    return guarded
