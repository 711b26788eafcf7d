"""Saving and loading models safely: atomic writes, ``torch.load(weights_only=True)``.

A model file holds only tensors and plain Python values: the weights, the
:class:`~fusemycell.models.config.UNetConfig` as a dict, and free metadata
(normalisation percentiles, patch size, training summary). It rebuilds the
network without the training code and never unpickles arbitrary objects.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fusemycell.io.tiff import temporary_sibling
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D

MODEL_FORMAT = "fusemycell-unet"
MODEL_VERSION = 1


class CheckpointError(ValueError):
    """A model or checkpoint file cannot be used; the message names the file."""


@dataclass
class TrainedModel:
    """A network with everything needed to apply it."""

    network: UNet3D
    config: UNetConfig
    metadata: dict[str, Any] = field(default_factory=dict)
    """Plain values: normalisation percentiles, patch size, training summary, ..."""

    def payload(self) -> dict[str, Any]:
        """What is written to disk (tensors and plain values only)."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "config": self.config.model_dump(mode="json"),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str = "") -> TrainedModel:
        """Rebuild a network from :meth:`payload`."""
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            raise CheckpointError(f"{source}: not a {MODEL_FORMAT} model file")
        config = UNetConfig.model_validate(payload["config"])
        network = UNet3D(config)
        network.load_state_dict(payload["state_dict"])
        return cls(network=network, config=config, metadata=dict(payload.get("metadata", {})))


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename: never a half-written file.

    Raises
    ------
    OSError
        Naming ``path`` and the cause (full disk, read-only folder, ...); ``path`` is left as it was.
    """
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:  # through Python's file: a full disk is an OSError, with its cause
            torch.save(payload, handle)
        os.replace(temporary, path)
    except BaseException as exc:
        _discard(temporary)
        # torch's writer, closing after a failed write, raises a RuntimeError ("unexpected pos") over the OSError
        cause = exc.__context__ if isinstance(exc, RuntimeError) else exc
        if not isinstance(cause, OSError):
            raise
        raise OSError(cause.errno, f"could not write {path}: {cause.strerror or cause}") from exc
    return path


def _discard(path: Path) -> None:
    """Remove a temporary file if it is there; failing to (read-only folder) must not hide the error being reported."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file.

    A file carrying pickled Python objects (code) is refused, not executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
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
