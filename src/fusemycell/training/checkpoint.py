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

from fusemycell.errors import Setting
from fusemycell.models.card import ModelCard, card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_torch_save,
    safe_torch_load,
    validation_summary,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "EpochMetrics",
    "TrainingCheckpoint",
    "restore_state",
    "resume_changes",
    "resume_error",
    "unreadable_for_resume",
]

#: The setting that starts a run afresh instead of resuming.
RESUME_SETTING = Setting("training.resume", "false")


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
        try:
            payload = safe_torch_load(path, give=None)
        except CheckpointError as exc:
            raise unreadable_for_resume(path, exc) from None
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
    return CheckpointError(
        "{path}: cannot resume from it: {problem}; start over with {resume}, or delete {folder}",
        path=path,
        problem=problem,
        resume=RESUME_SETTING,
        folder=Path(path).parent,
    )


def unreadable_for_resume(path: str | os.PathLike, error: CheckpointError) -> CheckpointError:
    """A file of the run that cannot be read, as a :func:`resume_error`: what the file is, then the way out."""
    return resume_error(path, f"it is {error.values['what']}" if "what" in error.values else error.message())


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


#: Settings a resumed run takes from the checkpoint (the optimizer's and the schedule's state), not from the
#: new configuration: ``setting: what carries the checkpoint's value``.
KEPT_FROM_CHECKPOINT = {
    "learning_rate": "the optimizer and the learning-rate schedule",
    "weight_decay": "the optimizer",
    "warmup_fraction": "the learning-rate schedule",
    "min_lr_fraction": "the learning-rate schedule",
}
#: Settings that change how many patches an optimizer step or an epoch holds.
STEP_SIZE_SETTINGS = ("batch_size", "accumulation_steps", "patches_per_epoch")


def resume_changes(
    saved: dict[str, Any], config: Any, *, steps_taken: int, planned_steps: int, steps_per_epoch: int, epoch: int
) -> list[str]:
    """What a resumed run does differently from what ``config`` asks, one line per changed setting.

    ``saved`` is the checkpoint's training configuration; ``steps_taken`` and ``planned_steps`` are the
    optimizer steps of the checkpoint's schedule (taken, planned in all); ``steps_per_epoch`` the steps of an
    epoch now; ``epoch`` the checkpoint's last epoch. Empty when nothing that matters changed.
    """
    lines = []
    for name, carrier in KEPT_FROM_CHECKPOINT.items():
        before, now = saved.get(name), getattr(config, name)
        if before is not None and before != now:
            lines.append(
                f"training.{name} is {before} in the checkpoint and {now} now: a resumed run keeps the "
                f"checkpoint's {carrier}, so it trains on with {before}; to train with {now}, start over "
                "(training.resume: false)"
            )
    for name in STEP_SIZE_SETTINGS:
        before, now = saved.get(name), getattr(config, name)
        if name in saved and before != now:
            lines.append(_step_size_line(name, before, now, steps_taken, planned_steps, steps_per_epoch, epoch))
    if saved.get("epochs") not in (None, config.epochs) and config.budget_minutes is None:
        lines.append(
            f"training.epochs is {saved['epochs']} in the checkpoint and {config.epochs} now: the learning-rate "
            f"schedule kept from the checkpoint was planned on {planned_steps} optimizer steps; "
            + _schedule_end(steps_taken, planned_steps, steps_per_epoch, epoch, config.epochs)
        )
    return lines


def _step_size_line(
    name: str, before: Any, now: Any, steps_taken: int, planned: int, steps_per_epoch: int, epoch: int
) -> str:
    meaning = {
        "batch_size": f"a batch now holds {now} patches instead of {before}, trained at the checkpoint's learning "
        f"rate (chosen for batches of {before})",
        "accumulation_steps": f"an optimizer step now accumulates {now} batches instead of {before}, with the "
        "checkpoint's learning rate (chosen for the old number)",
        "patches_per_epoch": f"an epoch now holds {now or 'every training patch'} patches instead of "
        f"{before or 'every training patch'}",
    }[name]
    return (
        f"training.{name} is {before} in the checkpoint and {now} now: {meaning}; an epoch takes {steps_per_epoch} "
        f"optimizer steps, and the learning-rate schedule kept from the checkpoint was planned on {planned} steps "
        f"of the old size: " + _schedule_end(steps_taken, planned, steps_per_epoch, epoch, None)
    )


def _schedule_end(steps_taken: int, planned: int, steps_per_epoch: int, epoch: int, epochs: int | None) -> str:
    """When the kept schedule reaches its minimum, in epochs of the new size."""
    left = max(0, planned - steps_taken)
    end = epoch + -(-left // max(1, steps_per_epoch))
    text = f"it reaches its minimum learning rate after epoch {end}"
    if epochs is not None and end < epochs:
        later = f"epoch {epochs} trains" if end + 1 == epochs else f"epochs {end + 1} to {epochs} train"
        text += f", and {later} at that minimum"
    elif epochs is not None and end > epochs:
        text += f", after the run ends (epoch {epochs}): the rate never decays fully"
    return text + "; to plan anew, start over (training.resume: false)"
