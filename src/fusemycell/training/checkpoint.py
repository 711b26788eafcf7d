"""The training checkpoint (``last.pt``): a typed record of everything a resumed run needs.

It holds the model card (so the architecture is the card's, one definition), the
network and forward-model weights, the optimizer, scheduler and scaler states, the
RNG states, the history and the best-epoch bookkeeping. :meth:`TrainingCheckpoint.read`
checks a file before anything is restored: a foreign file (a bare tensor, a dict
with missing keys) is refused with an error naming it and what is wrong, and
:func:`restore_state` turns a state that does not fit (an optimizer of another
model) into the same kind of error. Nothing is written before those checks pass.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from fusemycell.models.card import ModelCard, card_for
from fusemycell.models.model_file import CheckpointError, atomic_torch_save, safe_torch_load, validation_summary
from fusemycell.models.config import UNetConfig

CHECKPOINT_FORMAT = "fusemycell-checkpoint"


@dataclass
class EpochMetrics:
    """What one epoch measured; logged to MLflow with ``step = epoch``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_ssim: float
    val_ssim_input: float
    val_nssim: float
    learning_rate: float
    epoch_time_s: float
    patches_per_s: float
    voxels_per_s: float
    peak_rss_mb: float
    peak_device_mb: float
    train_consistency: float = float("nan")
    val_volume_nssim: float = float("nan")
    """Mean over channels of the per-channel mean N_SSIM of whole validation volumes (inference tiling)."""
    optimizer_steps: int = 0
    """Optimizer steps taken in the epoch."""
    train_time_s: float = float("nan")
    """Seconds spent on training steps (the rest of ``epoch_time_s`` is validation and checkpointing)."""
    validation_time_s: float = float("nan")
    """Seconds spent validating (patches and whole volumes)."""
    planned_steps: int = 0
    """Optimizer steps of the run the learning-rate schedule was planned on during the epoch (0: not recorded)."""
    planned_epochs: int = 0
    """The epoch training was planned to end with, during the epoch (0: not recorded)."""
    stopped_by_budget: bool = False
    """The time budget ended training with this epoch."""


@dataclass
class TrainingCheckpoint:
    """The state at the end of one epoch."""

    epoch: int
    card: ModelCard
    training_config: dict[str, Any]
    model: dict[str, torch.Tensor]
    physics: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rng: dict[str, Any]
    history: list[EpochMetrics]
    best_epoch: int
    best_score: float
    bad_epochs: int

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (tensors and plain values only)."""
        payload = {field.name: getattr(self, field.name) for field in fields(self)}
        payload.update(format=CHECKPOINT_FORMAT, card=self.card.model_dump(mode="json"))
        payload["history"] = [asdict(h) for h in self.history]
        return atomic_torch_save(payload, path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> TrainingCheckpoint:
        """Load and check a checkpoint file.

        Raises
        ------
        CheckpointError
            Naming ``path`` and what is wrong, with what to do about it.
        """
        payload = safe_torch_load(path)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            found = type(payload).__name__ if not isinstance(payload, dict) else "a dict of another format"
            raise resume_error(path, f"not a fusemycell training checkpoint (it holds {found})")
        if "card" not in payload and "unet_config" in payload:  # written before the model card
            payload["card"] = card_for(UNetConfig.model_validate(payload["unet_config"])).model_dump(mode="json")
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in payload]
        if missing:
            raise resume_error(path, f"the checkpoint is missing {', '.join(missing)}")
        values = {name: payload[name] for name in names}
        try:
            values["card"] = ModelCard.model_validate(values["card"])
            values["history"] = [EpochMetrics(**h) for h in values["history"]]
            values["epoch"], values["best_epoch"] = int(values["epoch"]), int(values["best_epoch"])
            values["best_score"], values["bad_epochs"] = float(values["best_score"]), int(values["bad_epochs"])
        except ValidationError as exc:
            raise resume_error(path, f"invalid model card: {validation_summary(exc)}") from None
        except (TypeError, ValueError) as exc:
            raise resume_error(path, f"invalid history or epoch counters ({exc})") from None
        for name in ("model", "optimizer", "scheduler", "scaler", "rng"):
            if not isinstance(values[name], dict):
                raise resume_error(path, f"{name} is a {type(values[name]).__name__}, not a state dict")
        return cls(**values)


def resume_error(path: str | os.PathLike, problem: str) -> CheckpointError:
    """An error naming the checkpoint and the way out."""
    folder = Path(path).parent
    return CheckpointError(
        f"{path}: cannot resume from it: {problem}; set training.resume: false or delete {folder} to start over"
    )


def restore_state(target: Any, state: dict[str, Any], what: str, path: str | os.PathLike) -> None:
    """``target.load_state_dict(state)``, or a :func:`resume_error` (``what`` says what does not fit)."""
    try:
        target.load_state_dict(state)
        if isinstance(target, torch.optim.Optimizer):
            _check_optimizer_shapes(target)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise resume_error(path, f"{what} this model ({detail})") from None


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """A state of another model with as many parameters loads silently: compare the moments' shapes."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            for key, value in optimizer.state.get(parameter, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim and value.shape != parameter.shape:
                    raise ValueError(f"{key} has shape {tuple(value.shape)}, the parameter {tuple(parameter.shape)}")
