"""The steps of one epoch, each a function of the :class:`~fusemycell.training.state.TrainingState`.

:func:`train_epoch` is :func:`train_step` over the epoch's batches (:func:`optimizer_step` at the end
of each accumulation group), then :func:`validate` on the validation patches and
:func:`validate_volumes` on whole validation volumes. Each can be run alone on a state.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from fusemycell.devices import Precision, memory_format
from fusemycell.metrics.ssim import normalized_ssim
from fusemycell.progress import Progress, track
from fusemycell.training import budget as budget_clock
from fusemycell.training.budget import volumes_due
from fusemycell.training.budget_steps import budget_spent, plan_budget
from fusemycell.training.checkpoint import EpochMetrics
from fusemycell.training.config import TrainingConfig
from fusemycell.training.losses import image_loss, ssim3d
from fusemycell.training.state import FusionModel, TrainingState
from fusemycell.training.validation_volumes import volume_nssim


def batch_loss(
    prediction: torch.Tensor,
    reconstructed: torch.Tensor | None,
    single_view: torch.Tensor,
    target: torch.Tensor,
    config: TrainingConfig,
    *,
    data_range: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training loss (image loss plus the physics term) and the consistency term alone: one definition.

    ``data_range`` is SSIM's range of each patch's volume (the challenge's, on the whole volume).
    """
    loss = image_loss(prediction, target, config.loss, data_range)
    if reconstructed is None:
        return loss, None
    consistency = torch.nn.functional.l1_loss(reconstructed, single_view[:, :1].float())  # not the position channels
    return loss + config.physics.weight * consistency, consistency


@dataclass
class EpochTotals:
    """What the training steps of an epoch add up (per-patch sums)."""

    loss: float = 0.0
    consistency: float = 0.0
    seen: int = 0
    """Patches seen by this rank."""
    steps: int = 0
    """Optimizer steps taken."""
    train_time_s: float = 0.0
    """Seconds of the training steps (the budget's clock)."""


def epoch_loader(state: TrainingState, epoch: int) -> DataLoader:
    """The epoch's training batches for this rank: ``patches_per_epoch`` drawn, or every patch once."""
    config, data = state.config, state.train_data
    if config.patches_per_epoch:  # the work of an epoch no longer depends on the store's size
        seed = (config.seed * 7919 + epoch) * max(1, state.job.world_size) + state.rank
        generator = torch.Generator().manual_seed(seed)
        sampler: Any = RandomSampler(data, replacement=True, num_samples=config.patches_per_epoch, generator=generator)
    elif state.distributed:
        sampler = DistributedSampler(
            data, num_replicas=state.job.world_size, rank=state.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(data, generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
    return DataLoader(
        data,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=state.device.type == "cuda",
        persistent_workers=False,
    )


def train_step(state: TrainingState, batch: Any, totals: EpochTotals, *, step: int, batches: int) -> None:
    """Micro-batch ``step`` of ``batches``: forward, loss, backward; an optimizer step ends each accumulation group."""
    accumulation = state.config.accumulation_steps
    single_view, target, data_range = (t.to(state.device, non_blocking=True) for t in batch[:3])
    single_view = single_view.contiguous(memory_format=memory_format(state.device))
    geometry = batch[3].to(state.device, non_blocking=True) if state.model.physics is not None else None
    group_size = min(accumulation, batches - (step // accumulation) * accumulation)
    last_of_group = (step + 1) % accumulation == 0 or step + 1 == batches
    sync = contextlib.nullcontext() if (last_of_group or not state.distributed) else state.wrapped.no_sync()
    with sync:
        with state.precision.autocast(state.device):
            prediction, reconstructed = state.wrapped(single_view, geometry)
        loss, consistency = batch_loss(
            prediction, reconstructed, single_view, target, state.config, data_range=data_range
        )
        state.scaler.scale(loss / group_size).backward()
    if last_of_group:
        optimizer_step(state)
        totals.steps += 1
    totals.loss += float(loss.detach()) * len(single_view)
    if consistency is not None:
        totals.consistency += float(consistency.detach()) * len(single_view)
    totals.seen += len(single_view)


def optimizer_step(state: TrainingState) -> None:
    """Clip (``grad_clip``), step the optimizer through the scaler, clear the gradients, advance the schedule."""
    if state.config.grad_clip is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.trainable, state.config.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()


def train_patches(state: TrainingState, epoch: int) -> EpochTotals:
    """Train on the epoch's batches, until the time budget's planned steps are taken or its time is up.

    With a budget, every optimizer step is timed; the first plan is made after the probe steps
    (:data:`~fusemycell.training.budget.PROBE_STEPS`), which count as training, and made again every
    quarter of an epoch.
    """
    started = budget_clock.now()
    state.model.train()
    state.train_data.set_epoch(epoch)
    loader = epoch_loader(state, epoch)
    totals = EpochTotals()
    state.optimizer.zero_grad(set_to_none=True)
    accumulation, budget = state.config.accumulation_steps, state.budget
    epoch_optimizer_steps = math.ceil(len(loader) / accumulation)
    description = f"epoch {epoch}/{state.planned_epochs}"
    batches = track(loader, description, unit="batch", summary=False, enabled=state.main)
    for step, batch in enumerate(batches):  # the epoch's own log line is the summary
        if step % accumulation == 0:
            if budget_spent(state):
                break
            if budget is not None:
                budget.step_starts()
        steps_before = totals.steps
        train_step(state, batch, totals, step=step, batches=len(loader))
        state.memory.sample()
        if budget is not None and totals.steps > steps_before:
            budget.step_ends()
            steps_left = epoch_optimizer_steps - totals.steps
            if steps_left > 0 and budget.replan_due(state.steps_per_epoch):
                if budget.forward_s_per_voxel is None:
                    budget.forward_s_per_voxel = forward_time_per_voxel(state, batch)
                plan_budget(state, epoch, steps_left_in_epoch=steps_left)
    batches.close()  # type: ignore[attr-defined]  # a loop the budget ended: its progress stops now
    totals.train_time_s = budget_clock.now() - started
    return totals


def forward_time_per_voxel(state: TrainingState, batch: Any) -> float:
    """Seconds per voxel of a forward pass without gradients (what validation costs), on one batch."""
    single_view = batch[0].to(state.device).contiguous(memory_format=memory_format(state.device))
    state.model.eval()
    with torch.no_grad(), state.precision.autocast(state.device):
        started = budget_clock.now()
        state.model.unet(single_view)
        if state.device.type == "cuda":
            torch.cuda.synchronize(state.device)  # the kernels are queued, not done, when the call returns
        seconds = budget_clock.now() - started
    state.model.train()
    return seconds / max(1, single_view[:, :1].numel())


def validate(
    model: FusionModel, data: Any, config: TrainingConfig, device: torch.device, *, precision: Precision
) -> dict[str, float]:
    """Loss, SSIM and N_SSIM (challenge formula, input as reference) over the validation patches."""
    model.eval()
    loader = DataLoader(data, batch_size=config.batch_size, sampler=SequentialSampler(data), num_workers=0)
    loss_sum = ssim_sum = ssim_input_sum = 0.0
    count = 0
    with torch.no_grad():
        for batch in loader:
            single_view, target, data_range = (t.to(device) for t in batch[:3])
            geometry = batch[3].to(device) if model.physics is not None else None
            with precision.autocast(device):
                prediction, reconstructed = model(single_view, geometry)
            loss, _ = batch_loss(prediction, reconstructed, single_view, target, config, data_range=data_range)
            loss_sum += float(loss) * len(single_view)
            ssim_sum += float(ssim3d(prediction, target, data_range).sum())
            ssim_input_sum += float(ssim3d(single_view[:, :1], target, data_range).sum())
            count += len(single_view)
    model.train()
    ssim_mean, ssim_input_mean = ssim_sum / max(1, count), ssim_input_sum / max(1, count)
    return {
        "loss": loss_sum / max(1, count),
        "ssim": ssim_mean,
        "ssim_input": ssim_input_mean,
        "nssim": float(normalized_ssim(ssim_mean, ssim_input_mean)) if ssim_input_mean < 1 else 0.0,
    }


def validate_volumes(state: TrainingState) -> float:
    """``val_volume_nssim`` of the network now: scored on rank 0, every rank gets it (NaN without volumes)."""
    if state.job.volumes is None:
        return float("nan")
    score = torch.tensor([float("nan")], device=state.device)
    if state.main:
        score[0] = volume_nssim(state.model.unet, state.job.volumes, state.card, state.device)[0]
        state.model.train()
    if state.distributed:
        torch.distributed.broadcast(score, src=0)
    return float(score.item())


def train_epoch(state: TrainingState, epoch: int) -> EpochMetrics:
    """Train on the epoch's patches, plan what follows (time budget), then validate on patches and (when
    due) whole volumes; the epoch's metrics.

    Under a time budget whole volumes are validated paced within their share, and always on the last
    (:func:`~fusemycell.training.budget.volumes_due`); the other epochs have no ``val_volume_nssim``.
    """
    started = budget_clock.now()
    state.memory.reset()
    totals = train_patches(state, epoch)
    train_time = totals.train_time_s
    ran_under = state.schedule.total_steps, state.planned_epochs  # the plan the epoch's steps ran under
    plan_budget(state, epoch)  # what follows: when nothing does, this epoch is the last and is validated whole
    ending = state.budget_ended or epoch >= state.planned_epochs or epoch >= state.config.epochs
    with Progress(f"epoch {epoch} validation", summary=False, enabled=state.main):
        validation = validate(state.model, state.val_data, state.config, state.device, precision=state.precision)
        patches_done = budget_clock.now()
        due = state.job.volumes is not None and volumes_due(epoch, state.plan, ending)
        volume_score = validate_volumes(state) if due else float("nan")
    validation_end = budget_clock.now()
    validation_time = validation_end - started - train_time
    if state.budget is not None:
        state.budget.measured(
            patches_s=patches_done - started - train_time, volumes_s=validation_end - patches_done if due else None
        )
    state.memory.sample()
    seen, patches = totals.seen, totals.seen * state.job.world_size
    physics_on = state.model.physics is not None
    return EpochMetrics(
        epoch=epoch,
        train_loss=totals.loss / max(1, seen),
        val_loss=validation["loss"],
        val_ssim=validation["ssim"],
        val_ssim_input=validation["ssim_input"],
        val_nssim=validation["nssim"],
        learning_rate=float(state.optimizer.param_groups[0]["lr"]),
        epoch_time_s=budget_clock.now() - started,
        patches_per_s=patches / max(train_time, 1e-9),
        voxels_per_s=patches * int(np.prod(state.train_data.store.patch_size_zyx)) / max(train_time, 1e-9),
        peak_rss_mb=state.memory.rss_mb,
        peak_device_mb=state.memory.peak_device_mb,
        train_consistency=totals.consistency / seen if physics_on and seen else float("nan"),
        val_volume_nssim=volume_score,
        optimizer_steps=totals.steps,
        train_time_s=train_time,
        validation_time_s=validation_time,
        planned_steps=ran_under[0],
        planned_epochs=ran_under[1],
        stopped_by_budget=state.budget is not None
        and (state.budget_ended or state.planned_epochs <= epoch < state.config.epochs),
    )
