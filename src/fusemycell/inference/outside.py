"""Inputs outside the model's training domain: the check, its one warning line, and the residual base.

Every consumer of a model (the inference pipeline and ``fusemycell predict``, the in-memory prediction
of napari and the MLflow model) measures its input (:func:`fusemycell.models.domain.measure_file`:
the header and a few planes) and compares it with the card's
:class:`~fusemycell.models.domain.TrainingDomain`. ``inference.outside_training`` says what then
happens: ``warn`` predicts and says which property is outside, ``base`` writes the residual base (the
light blur of the input the network starts from, :class:`ResidualBaseBackend`) and says so,
``refuse`` skips the input with :class:`OutsideTrainingError`. No Kedro import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from fusemycell.devices import resolve_device
from fusemycell.errors import Setting, UserError, UserMessage
from fusemycell.models.card import ModelCard
from fusemycell.models.config import UNetConfig
from fusemycell.models.domain import Departure, InputMeasurement, measure_array, measure_file
from fusemycell.models.unet import UNet3D

Mode = Literal["warn", "base", "refuse"]

#: What each mode adds to the line of an input outside the training domain; ``{mode}`` is the setting, worded by
#: the command that prints the line (``inference.outside_training: base``, ``--outside-training base``).
CONSEQUENCES: dict[str, str] = {
    "warn": "the prediction may be worse than the input",
    "base": "the blurred input (the residual base) is written instead of the prediction ({mode})",
    "refuse": "skipped ({mode}; warn or base would predict it)",
}


class OutsideTrainingError(UserError):
    """An input outside the training domain under ``inference.outside_training: refuse``; the message names it."""


@dataclass(frozen=True)
class DomainCheck:
    """One input compared with the training domain: what lies outside it, and what the mode makes of it."""

    name: str
    """The input's name (its file name), as the line names it."""
    mode: Mode = "warn"
    departures: tuple[Departure, ...] = field(default_factory=tuple)
    checked: bool = True
    """False when the model records no training domain (a model trained before it was recorded)."""

    @property
    def outside(self) -> bool:
        """True when some property lies outside the training range."""
        return bool(self.departures)

    @property
    def uses_base(self) -> bool:
        """True when the residual base is written instead of the network's prediction."""
        return self.outside and self.mode == "base"

    def line(self) -> str:
        """The one plain line of an input outside the domain: every property outside, then the consequence.

        A :class:`~fusemycell.errors.UserMessage`: the ``kedro run`` words, which a command words again.
        """
        if not self.outside:
            return ""
        template, values = self._template()
        return UserMessage(template, **values)

    def _template(self) -> tuple[str, dict[str, object]]:
        found = "; ".join(d.sentence() for d in self.departures)
        mode = Setting("inference.outside_training", self.mode, assignment=False)
        return "{name}: {found}; " + CONSEQUENCES[self.mode], {"name": self.name, "found": found, "mode": mode}

    def record(self) -> dict[str, object]:
        """JSON-ready for the run's report."""
        return {
            "file": self.name,
            "action": {"warn": "predicted", "base": "residual base written", "refuse": "skipped"}[self.mode],
            "outside": [d.record() for d in self.departures],
            "line": self.line(),
        }

    def raise_if_refused(self) -> None:
        """Raise :class:`OutsideTrainingError` (the line) for an input outside the domain under ``refuse``."""
        if self.outside and self.mode == "refuse":
            template, values = self._template()
            raise OutsideTrainingError(template, **values)


def check_measurement(card: ModelCard, measured: InputMeasurement, name: str, mode: Mode = "warn") -> DomainCheck:
    """``measured`` (of the input ``name``) against ``card``'s training domain."""
    domain = card.training_domain
    if domain is None:
        return DomainCheck(name, mode, checked=False)
    return DomainCheck(name, mode, tuple(domain.departures(measured)))


class ResidualBaseBackend:
    """A backend that writes the residual base: the network's starting point, without its correction.

    For a residual network that is its ``residual_base`` (the input's Gaussian blur of
    ``residual_blur_sigma`` voxels, or the input itself), what the guard's scale 0 gives; for a network
    that is not residual, the input itself. No weights are used: the same for the torch and ONNX backends.
    """

    def __init__(self, architecture: UNetConfig, device: str = "auto"):
        self.device = resolve_device(device, setting="inference.device")
        self.out_channels = architecture.out_channels
        self.network = UNet3D(architecture).to(self.device).eval() if architecture.has_residual else None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.network is None:
            return host[:, : self.out_channels].numpy().copy()
        with torch.inference_mode():
            return self.network.residual_base(host.to(self.device)).float().cpu().numpy()


def check_array(
    volume: np.ndarray, card: ModelCard, spacing_zyx: tuple[float, ...] | None, name: str, mode: Mode = "warn"
) -> DomainCheck:
    """An in-memory ZYX volume (``spacing_zyx`` None: its voxel size is unknown, not checked) against the domain."""
    if card.training_domain is None:
        return DomainCheck(name, mode, checked=False)
    return check_measurement(card, measure_array(volume, spacing_zyx), name, mode)


def check_file(path: str, card: ModelCard, name: str, mode: Mode = "warn") -> DomainCheck:
    """A volume file (its header and a few planes) against the domain."""
    if card.training_domain is None:
        return DomainCheck(name, mode, checked=False)
    return check_measurement(card, measure_file(path), name, mode)
