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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim

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


@dataclass
class GuardChoice:
    """The chosen scale and, for every candidate, the mean N_SSIM per channel."""

    scale: float
    scores: dict[float, dict[str, float]] = field(default_factory=dict)
    per_volume: dict[str, dict[float, float]] = field(default_factory=dict)

    def score(self, scale: float) -> float:
        """Mean over channels of the per-channel mean N_SSIM at ``scale``."""
        return float(np.mean(list(self.scores[scale].values())))


def _nssim(prediction: np.ndarray, target: np.ndarray, ssim_input: float, target_stats: object) -> float:
    value = ssim(prediction, target, statistics=(image_statistics(prediction), target_stats))
    return normalized_ssim(value, ssim_input)


def choose_scale(
    volumes: Iterable[ValidationVolume],
    predict: Callable[[np.ndarray], np.ndarray],
    base: Callable[[np.ndarray], np.ndarray],
    scales: Sequence[float] = GUARD_SCALES,
) -> GuardChoice:
    """Score every scale on every volume; the best mean over channels wins (ties: the smaller scale).

    ``predict`` gives the network's output at scale 1 (with the inference tiling), ``base`` the
    residual base of the same volume; the output at scale ``s`` is ``base + s * (predict - base)``.
    """
    by_channel: dict[float, dict[str, list[float]]] = {s: {} for s in scales}
    per_volume: dict[str, dict[float, float]] = {}
    for volume in volumes:
        full, start = predict(volume.angle), base(volume.angle)
        correction = full - start
        target_stats = image_statistics(volume.fused)
        ssim_input = ssim(volume.angle, volume.fused, statistics=(image_statistics(volume.angle), target_stats))
        per_volume[volume.name] = {}
        for scale in scales:
            score = _nssim(start + np.float32(scale) * correction, volume.fused, ssim_input, target_stats)
            by_channel[scale].setdefault(volume.channel, []).append(score)
            per_volume[volume.name][scale] = score
    if not per_volume:
        raise ValueError("the guard needs at least one validation volume")
    scores = {s: {c: float(np.mean(v)) for c, v in channels.items()} for s, channels in by_channel.items()}
    choice = GuardChoice(scale=0.0, scores=scores, per_volume=per_volume)
    choice.scale = max(scales, key=lambda s: (round(choice.score(s), 6), -s))
    return choice
