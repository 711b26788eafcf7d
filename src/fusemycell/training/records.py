"""What a run writes about itself: the card of the chosen epoch, ``best.pt``, the epoch's log line."""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import numpy as np
import torch

from fusemycell.devices import Precision
from fusemycell.models.card import ModelCard, TrainingSummary, ValidationSummary
from fusemycell.models.model_file import TrainedModel, atomic_torch_save
from fusemycell.training.checkpoint import EpochMetrics
from fusemycell.training.config import TrainingConfig
from fusemycell.training.physics import SingleViewForwardModel
from fusemycell.training.state import TrainingState

logger = logging.getLogger(__name__)


def training_summary(epochs: list[EpochMetrics], precision: Precision) -> TrainingSummary:
    """Steps, patches and time of the epochs trained so far (the card's ``training``)."""
    train_s = sum(m.train_time_s for m in epochs if not math.isnan(m.train_time_s))
    total_s = sum(m.epoch_time_s for m in epochs)
    steps = sum(m.optimizer_steps for m in epochs)
    patches = int(round(sum(m.patches_per_s * m.train_time_s for m in epochs if not math.isnan(m.train_time_s))))
    validation_s = sum(m.validation_time_s for m in epochs if not math.isnan(m.validation_time_s))
    return TrainingSummary(
        epochs=len(epochs),
        optimizer_steps=steps,
        patches=patches,
        minutes=total_s / 60,
        steps_per_minute=60 * steps / train_s if train_s > 0 else 0.0,
        patches_per_minute=60 * patches / train_s if train_s > 0 else 0.0,
        validation_share=min(1.0, validation_s / total_s) if total_s > 0 else 0.0,
        precision="bfloat16"
        if precision.enabled and precision.dtype == torch.bfloat16
        else ("float16" if precision.enabled else "float32"),
        planned_steps=int(epochs[-1].planned_steps) if epochs and epochs[-1].planned_steps else None,
        stopped_by_budget=bool(epochs and epochs[-1].stopped_by_budget),
    )


def trained_card(
    card: ModelCard,
    metrics: EpochMetrics | None,
    physics: SingleViewForwardModel | None,
    monitor: str | None = None,
    summary: TrainingSummary | None = None,
) -> ModelCard:
    """The card with the chosen epoch's validation metrics, the training summary and the fitted forward model."""
    validation = None
    if metrics is not None:
        validation = ValidationSummary(
            epoch=metrics.epoch,
            val_nssim=metrics.val_nssim,
            val_ssim=metrics.val_ssim,
            val_loss=metrics.val_loss,
            val_volume_nssim=None if math.isnan(metrics.val_volume_nssim) else metrics.val_volume_nssim,
            monitor=monitor,
        )
    return card.model_copy(
        update={
            "validation": validation,
            "physics": physics.describe() if physics is not None else None,
            "training": summary,
        }
    )


def best_of(history: list[EpochMetrics], best_epoch: int) -> EpochMetrics | None:
    """The metrics of ``best_epoch`` (the last epoch's when it is not in the history)."""
    return next((h for h in history if h.epoch == best_epoch), history[-1] if history else None)


def state_card(state: TrainingState, metrics: EpochMetrics | None) -> ModelCard:
    """The card of the network as it is now, with ``metrics`` as its validation."""
    summary = training_summary(state.history, state.precision)
    return trained_card(state.card, metrics, state.model.physics, state.config.monitor, summary)


def save_best(state: TrainingState, metrics: EpochMetrics | None) -> None:
    """``best.pt``: the network as it is now, its card with ``metrics``, atomically."""
    atomic_torch_save(TrainedModel(state.model.unet, state_card(state, metrics)).payload(), state.best_path)


def log_epoch(
    metrics: EpochMetrics, epochs: int, this_run: list[EpochMetrics], budget_left_s: float | None = None
) -> None:
    """One line per epoch: losses, scores, time (validation's share), steps and throughput, and an ETA
    that honours the time budget (``budget_left_s``)."""
    remaining = (epochs - metrics.epoch) * float(np.mean([m.epoch_time_s for m in this_run]))
    if budget_left_s is not None:
        remaining = min(remaining, budget_left_s)
    validation_share = metrics.validation_time_s / metrics.epoch_time_s if metrics.epoch_time_s > 0 else 0.0
    logger.info(
        "epoch %d/%d  train %.4f  val %.4f  SSIM %.4f (input %.4f)  N_SSIM %.4f%s  lr %.2e | %.1f s "
        "(validation %.0f%%), %d steps, %.0f steps/min, %.1f patches/s, ETA %s, peak RSS %.0f MB",
        metrics.epoch,
        epochs,
        metrics.train_loss,
        metrics.val_loss,
        metrics.val_ssim,
        metrics.val_ssim_input,
        metrics.val_nssim,
        "" if math.isnan(metrics.val_volume_nssim) else f"  volumes N_SSIM {metrics.val_volume_nssim:.4f}",
        metrics.learning_rate,
        metrics.epoch_time_s,
        100 * validation_share,
        metrics.optimizer_steps,
        60 * metrics.optimizer_steps / max(metrics.train_time_s, 1e-9),
        metrics.patches_per_s,
        time.strftime("%H:%M:%S", time.gmtime(remaining)) if remaining < 86400 else f"{remaining / 3600:.0f} h",
        metrics.peak_rss_mb,
    )


Ending = Literal["epochs", "budget", "early stopping"]

#: The learning-rate schedule counts as cut short when more than this share of its planned steps did not run
#: (a step or two short of the plan leaves the learning rate at its end all the same).
SCHEDULE_TOLERANCE = 0.02


def ended_by(state: TrainingState) -> Ending:
    """What ended training: early stopping, the time budget, or the epochs asked for."""
    if state.stopped_early:
        return "early stopping"
    return "budget" if state.budget_ended else "epochs"


def ending_of(history: list[EpochMetrics], asked_epochs: int) -> Ending:
    """What ended training, from its history: the time budget, the epochs asked for, or early stopping."""
    last = history[-1]
    if last.stopped_by_budget:
        return "budget"
    return "epochs" if last.epoch >= asked_epochs else "early stopping"


def outcome(history: list[EpochMetrics], asked_epochs: int, budget_minutes: float | None) -> str:
    """The run's closing sentence: epochs and optimizer steps that ran, and whether the time budget cut
    training short of the epochs asked for and of the steps its learning-rate schedule was planned on.

    ``history`` is every epoch of the model (a resumed run's earlier ones too: the schedule counts them).
    """
    if not history:
        return "training: no epoch trained"
    steps = sum(m.optimizer_steps for m in history)
    minutes = sum(m.epoch_time_s for m in history) / 60
    last, planned = history[-1].epoch, history[-1].planned_steps
    text = f"training: {len(history)} epoch(s), {steps} optimizer steps in {minutes:.1f} min"
    if budget_minutes is not None:
        text += f" (time budget {budget_minutes:g} min)"
    ending = ending_of(history, asked_epochs)
    if ending == "early stopping":
        return text + f"; stopped early after epoch {last} of the {asked_epochs} asked for"
    if ending == "epochs":
        return text + f"; all {asked_epochs} epochs asked for ran"
    text += f"; the time budget ended training after epoch {last} of the {asked_epochs} asked for"
    if planned and steps < (1 - SCHEDULE_TOLERANCE) * planned:
        return text + (
            f", and cut it short of its learning-rate schedule: {steps} of the {planned} steps it was planned "
            "on ran (steps became slower than when they were timed)"
        )
    return text + f"; the learning-rate schedule was planned on the steps that fit ({planned}) and ran to its end"


def log_outcome(history: list[EpochMetrics], config: TrainingConfig) -> None:
    """Rank 0, at the end of training: :func:`outcome` in the log."""
    logger.info("%s", outcome(history, config.epochs, config.budget_minutes))
