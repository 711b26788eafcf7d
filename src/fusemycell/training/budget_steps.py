"""The time budget applied to one process of a run: the plan, time up, the end of training.

The decisions of :mod:`fusemycell.training.budget` made on a run's
:class:`~fusemycell.training.state.TrainingState` (which holds a :class:`~fusemycell.training.budget.TimeBudget`
and its plan): :func:`plan_budget`, :func:`budget_spent` before every optimizer step, :func:`out_of_budget`
after every epoch. No Kedro import.
"""

from __future__ import annotations

import logging

import torch

from fusemycell.training.budget import BudgetPlan, log_plan, make_plan, share_plan, validate_volumes_now
from fusemycell.training.state import TrainingState

logger = logging.getLogger(__name__)


def plan_budget(state: TrainingState, epoch: int, steps_left_in_epoch: int = 0) -> None:
    """With a time budget, plan (rank 0; every rank follows) the optimizer steps, the epochs and the
    whole-volume validations that fit, and spread the learning rate over those steps.

    ``steps_left_in_epoch`` above 0: in the middle of ``epoch`` (after the probe steps). Otherwise
    ``epoch``'s steps are done and what follows it is planned, the end of ``epoch`` itself (its validation,
    whole volumes included, and its checkpoint) set aside first: when no further epoch fits, ``epoch`` is
    the last, and its whole volumes are validated in the time set aside.
    """
    budget = state.budget
    if budget is None:
        return
    steps_taken, under_way = state.scheduler.last_epoch, steps_left_in_epoch > 0
    volumes = state.job.volumes is not None
    volume_s = budget.volume_cost(state.volume_voxels) if volumes else 0.0
    closing = 0.0 if under_way else end_of_epoch_cost(state)
    steps, epochs, validations = make_plan(
        budget,
        remaining_s=budget.remaining - closing,
        steps_left_in_epoch=steps_left_in_epoch,
        steps_per_epoch=state.steps_per_epoch,
        max_epochs=state.config.epochs - epoch + (1 if under_way else 0),
        per_epoch=budget.epoch_cost(state.patch_voxels),
        volume_s=volume_s,
    )
    now = not under_way and validate_volumes_now(
        spent_s=budget.volume_spent_s,
        volume_s=volume_s,
        share=budget.volume_share,
        budget_s=budget.seconds,
        at_s=budget.elapsed + closing,
    )
    local = BudgetPlan(steps_taken + steps, epoch + epochs - (1 if under_way else 0), now)
    previous, budget.planned_at = state.plan, budget.steps_timed
    plan = share_plan(local, state.device, state.distributed)
    state.plan, state.planned_epochs = plan, plan.epochs
    state.schedule.plan(max(plan.step_limit, steps_taken + 1))
    if state.main and (previous is None or previous.epochs != plan.epochs):
        log_plan(budget, plan, steps_taken, 0 if under_way else epoch, validations if volumes else None)


def end_of_epoch_cost(state: TrainingState) -> float:
    """Seconds the end of an epoch that ends training takes: validation (whole volumes too) and checkpoint."""
    budget = state.budget
    if budget is None:
        return 0.0
    volumes = budget.volume_cost(state.volume_voxels) if state.job.volumes is not None else 0.0
    return budget.epoch_cost(state.patch_voxels) + volumes


def budget_spent(state: TrainingState) -> bool:
    """Before an optimizer step: True when the planned steps are taken, or the time is up (rank 0 decides)."""
    budget = state.budget
    if budget is None:
        return False
    if state.plan is not None and state.scheduler.last_epoch >= state.plan.step_limit:
        state.budget_ended = True
        return True
    up = budget.time_up(end_of_epoch_cost(state))
    if state.distributed:
        flag = torch.tensor([1.0 if up else 0.0], device=state.device)
        torch.distributed.broadcast(flag, src=0)
        up = bool(flag.item())
    state.budget_ended = state.budget_ended or up
    return up


def out_of_budget(state: TrainingState, epoch: int) -> bool:
    """After an epoch: True when the budget ended training (every rank has the same plan and flag)."""
    if state.budget is None or not (state.budget_ended or epoch >= state.planned_epochs):
        return False
    state.budget_ended = True
    if state.main and epoch < state.config.epochs:
        logger.info(
            "time budget reached after epoch %d (%.1f of %.1f min)",
            epoch,
            state.budget.elapsed / 60,
            state.config.budget_minutes,
        )
    return True
