"""Whole validation volumes: read one at a time, predicted as inference does, scored with the challenge's N_SSIM.

Training does not import inference: the prediction is a function it is given
(:class:`VolumePredictor`; the training pipeline binds
:func:`fusemycell.inference.predictor.predict_whole_volume` to the inference tiling). The function
must pickle (a module-level function or a :func:`functools.partial` of one) when the engine spawns
DDP workers. No Kedro import.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from fusemycell.io.formats import read_volume
from fusemycell.metrics.ssim import ImageStatistics, image_statistics, normalized_ssim, ssim
from fusemycell.models.card import ModelCard
from fusemycell.position import PositionChannels, PositionField, position_field

#: Largest block of a validation volume that is predicted (its centre): bounded memory on GB volumes.
GUARD_BLOCK_ZYX = (64, 512, 512)


class VolumePredictor(Protocol):
    """Predicts a whole single view (normalised, float32) with ``network`` on ``device``, as inference does."""

    def __call__(
        self,
        network: torch.nn.Module,
        card: ModelCard,
        single_view: np.ndarray,
        position: PositionField | None,
        device: str | torch.device,
    ) -> np.ndarray: ...


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


@dataclass(frozen=True)
class VolumeValidation:
    """Whole validation volumes and how they are predicted (picklable for DDP workers).

    Iterating reads the volumes again, one at a time (:func:`read_validation_volumes`): memory holds one
    volume's central block whatever the number of volumes.
    """

    pairs: tuple[tuple[str, ...], ...]
    """``(name, channel, angle path, fused path[, study])`` of preprocessed (normalised) volumes."""
    predict: VolumePredictor
    """The inference prediction (its tiling and precision bound in): validation predicts as inference does."""
    ssim_input: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    """SSIM(input, target) by volume, the same every epoch: computed on the first scoring, then reused."""

    def volumes(self, position: PositionChannels | None) -> Iterator[ValidationVolume]:
        """The volumes, with ``position`` channels (the model card's)."""
        return read_validation_volumes(self.pairs, position)

    def voxels(self) -> int:
        """Voxels one validation predicts: the central blocks of every volume (read from the files' headers)."""
        return sum(
            int(np.prod([s.stop - s.start for s in central_block(read_volume(pair[2], lazy=True).data)]))
            for pair in self.pairs
        )


def volume_nssim_of(prediction: np.ndarray, target: np.ndarray, ssim_input: float, target_stats: object) -> float:
    """N_SSIM of ``prediction`` against ``target``, given SSIM(input, target) and the target's statistics."""
    value = ssim(prediction, target, statistics=(image_statistics(prediction), target_stats))
    return normalized_ssim(value, ssim_input)


def reference(
    volume: ValidationVolume, known_ssim_input: dict[str, float] | None = None
) -> tuple[ImageStatistics, float]:
    """The target's SSIM statistics and SSIM(input, target), the reference of N_SSIM (from ``known_ssim_input``
    when it has the volume, then kept there)."""
    target_stats = image_statistics(volume.fused)
    if known_ssim_input is not None and volume.name in known_ssim_input:
        return target_stats, known_ssim_input[volume.name]
    ssim_input = ssim(volume.angle, volume.fused, statistics=(image_statistics(volume.angle), target_stats))
    if known_ssim_input is not None:
        known_ssim_input[volume.name] = ssim_input
    return target_stats, ssim_input


def volume_nssim(
    network: torch.nn.Module,
    validation: VolumeValidation,
    card: ModelCard,
    device: torch.device | str = "cpu",
) -> tuple[float, dict[str, float]]:
    """The challenge's N_SSIM of ``network`` on whole validation volumes: mean over channels, and per channel.

    Predicted with ``validation.predict`` (the inference tiling); the network is left in evaluation mode.
    """
    by_channel: dict[str, list[float]] = {}
    for volume in validation.volumes(card.position):
        prediction = validation.predict(network, card, volume.angle, volume.position, device)
        target_stats, ssim_input = reference(volume, validation.ssim_input)
        by_channel.setdefault(volume.channel, []).append(
            volume_nssim_of(prediction, volume.fused, ssim_input, target_stats)
        )
    if not by_channel:
        raise ValueError("whole-volume validation needs at least one validation volume")
    means = {channel: float(np.mean(values)) for channel, values in by_channel.items()}
    return float(np.mean(list(means.values()))), means


def central_block(volume: np.ndarray, block: Sequence[int] = GUARD_BLOCK_ZYX) -> tuple[slice, ...]:
    """The slices of the centre of ``volume``, at most ``block`` voxels per axis."""
    return tuple(slice((n - min(n, b)) // 2, (n - min(n, b)) // 2 + min(n, b)) for n, b in zip(volume.shape, block))


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
