"""Saving and loading models safely: atomic writes, ``torch.load(weights_only=True)``.

A model file holds only tensors and plain Python values: the weights and the
:class:`~fusemycell.models.card.ModelCard` (architecture, normalisation, voxel
size, resampling, tile, training summary) as a dict. It rebuilds the network
without the training code and never unpickles arbitrary objects. Version 1 files
(architecture plus a free ``metadata`` dict) are converted to a card on load.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from fusemycell.io.atomic import could_not_write, writing_atomically
from fusemycell.models.card import CARD_VERSION, ModelCard, card_from_legacy
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D

logger = logging.getLogger(__name__)

MODEL_FORMAT = "fusemycell-unet"
#: Version of the model file: 1 = architecture + free metadata dict, 2 = the model card.
MODEL_VERSION = CARD_VERSION


class CheckpointError(ValueError):
    """A model or checkpoint file cannot be used; the message names the file."""


@dataclass
class TrainedModel:
    """A network with everything needed to apply it."""

    network: UNet3D
    card: ModelCard
    """Architecture, normalisation, voxel size, resampling, tile, training summary."""

    @property
    def config(self) -> UNetConfig:
        """The network's architecture (``card.architecture``)."""
        return self.card.architecture

    def for_channel(self, channel: str | None) -> TrainedModel:
        """The model as an input of ``channel`` is predicted with: the guard's correction weight of that channel
        (:meth:`ModelCard.architecture_for`); ``self`` when it is the architecture's own. The weights are shared."""
        architecture = self.card.architecture_for(channel)
        if architecture == self.card.architecture:
            return self
        view = copy.copy(self.network)  # the same parameters, buffers and layers; its own architecture
        view.config = architecture  # read by the forward pass only for the correction weight
        return TrainedModel(view, self.card)

    def payload(self) -> dict[str, Any]:
        """What is written to disk (tensors and plain values only)."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "card": self.card.model_dump(mode="json"),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: Any, source: str = "") -> TrainedModel:
        """Rebuild a network from :meth:`payload` (or a version 1 payload, converted).

        Raises
        ------
        CheckpointError
            Naming ``source``: not a model file, an unknown version, an invalid card,
            or weights that do not fit the architecture the card describes.
        """
        card = read_card(payload, source)
        return cls(network=network_from_state(card.architecture, payload["state_dict"], source), card=card)


def read_card(payload: Any, source: str = "") -> ModelCard:
    """The card of a model file's payload; version 1 files are converted (see :func:`card_from_legacy`)."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{source}: not a {MODEL_FORMAT} model file")
    version = payload.get("version")
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError(f"{source}: the model file holds no weights (state_dict)")
    try:
        if version == 1:
            card = card_from_legacy(payload["config"], dict(payload.get("metadata") or {}))
            logger.info(
                "%s: model file version 1, converted to a model card (no resampling, as version 1 predicted); "
                "re-save it with 'python -m fusemycell.models.model_file %s' to upgrade the file",
                source,
                source,
            )
            return card
        if version == MODEL_VERSION:
            return ModelCard.model_validate(payload["card"])
    except ValidationError as exc:
        raise CheckpointError(f"{source}: invalid model card (version {version}): {validation_summary(exc)}") from None
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{source}: invalid model card (version {version}): {exc!r}") from None
    raise CheckpointError(
        f"{source}: model file version {version!r} is unknown to this fusemycell (it reads versions 1 and "
        f"{MODEL_VERSION}); a file from a newer fusemycell needs that release, an older one can be converted "
        "with 'python -m fusemycell.models.model_file PATH' from a release that reads it"
    )


def validation_summary(error: ValidationError) -> str:
    """A pydantic error on one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


def network_from_state(config: UNetConfig, state_dict: dict[str, Any], source: str = "") -> UNet3D:
    """A :class:`UNet3D` of ``config`` with these weights, or an error saying how they disagree."""
    network = UNet3D(config)
    try:
        network.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(
            f"{source}: the weights do not fit the architecture it describes (depth {config.depth}, "
            f"base_channels {config.base_channels}): {detail[:400]}"
        ) from None
    return network


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename: never a half-written file.

    Raises
    ------
    OSError
        Naming ``path`` and the cause (full disk, read-only folder, ...); ``path`` is left as it was.
    """
    path = Path(path)
    try:
        # through Python's file: a full disk is an OSError, with its cause
        with writing_atomically(path) as temporary, open(temporary, "wb") as handle:
            torch.save(payload, handle)
    except BaseException as exc:
        # torch's writer, closing after a failed write, raises a RuntimeError ("unexpected pos") over the OSError
        cause = exc.__context__ if isinstance(exc, RuntimeError) else exc
        if not isinstance(cause, OSError):
            raise
        raise could_not_write(path, cause) from exc
    return path


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an ONNX model (by its suffix, or a header that parses as one), not a PyTorch file."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as handle:
            if handle.read(1) != b"\x08":  # ONNX: protobuf field 1 (ir_version); PyTorch: a zip ("PK") or a pickle
                return False
        import onnx

        onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything that does not parse is not an ONNX file
        return False
    return True


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file.

    A file carrying pickled Python objects (code) is refused, not executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if is_onnx_file(path):
        raise CheckpointError(f"{path}: an ONNX file (an exported network), not a fusemycell model file (.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... on bad files
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused, it holds pickled Python objects that weights_only loading does not "
                f"execute ({message}). Only load model files you trust, saved by fusemycell."
            ) from exc
        raise CheckpointError(f"{path}: not a readable model or checkpoint ({message}); truncated?") from exc


def save_model(model: TrainedModel, path: str | os.PathLike) -> Path:
    """Write a model file atomically."""
    return atomic_torch_save(model.payload(), path)


def load_model(path: str | os.PathLike) -> TrainedModel:
    """Load a model file written by :func:`save_model` (``weights_only=True``)."""
    return TrainedModel.from_payload(safe_torch_load(path), source=str(path))


def upgrade_model_file(path: str | os.PathLike) -> Path:
    """Rewrite a model file (of any version this release reads) in the current version, atomically."""
    return save_model(load_model(path), path)


if __name__ == "__main__":  # python -m fusemycell.models.model_file PATH [PATH ...]
    import sys

    for argument in sys.argv[1:]:
        print(f"{upgrade_model_file(argument)}: model file version {MODEL_VERSION}")
