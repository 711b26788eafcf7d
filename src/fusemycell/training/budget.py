"""The time budget (``training.budget_minutes``): the optimizer steps that fit, and when to stop.

After every epoch, from this run's mean time per optimizer step and per epoch of validation and
checkpointing, :func:`plan_budget` plans the steps left: those whose training and the validation of
the epochs they make fit in the time left; the last epoch is shortened to end with the budget (not
left unused), unless it would be under a quarter of an epoch. Rank 0 plans; every rank follows.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from fusemycell.training.schedule import steps_that_fit
from fusemycell.training.state import TrainingState

logger = logging.getLogger(__name__)


def plan_budget(state: TrainingState, epoch: int) -> None:
    """With a time budget, plan the optimizer steps that fit after ``epoch``, and the learning rate on them."""
    budget = state.config.budget_minutes
    if budget is None:
        return
    done = state.this_run()
    steps_done = max(1, sum(m.optimizer_steps for m in done))
    step_time = sum(m.train_time_s for m in done) / steps_done
    fixed = float(np.mean([m.epoch_time_s - m.train_time_s for m in done]))
    remaining = budget * 60 - (time.perf_counter() - state.started)
    steps_left, epochs_left = steps_that_fit(
        remaining, step_time, fixed, state.steps_per_epoch, state.config.epochs - epoch
    )
    plan = torch.tensor([float(state.scheduler.last_epoch + steps_left), float(epoch + epochs_left)])
    if state.distributed:
        torch.distributed.broadcast(plan.to(state.device), src=0)
    state.step_limit, state.planned_epochs = int(plan[0]), int(plan[1])
    state.schedule.plan(max(state.step_limit, state.scheduler.last_epoch + 1))
    state.deadline = state.started + budget * 60 - fixed
    if state.main and epoch == state.start_epoch:
        logger.info(
            "time budget %.1f min: %d more optimizer steps (%.2f s each) in %d more epochs; learning rate "
            "planned on them",
            budget,
            steps_left,
            step_time,
            epochs_left,
        )


def budget_spent(state: TrainingState) -> bool:
    """True when the planned optimizer steps are taken (or, in one process, the training time is up)."""
    if state.step_limit is not None and state.scheduler.last_epoch >= state.step_limit:
        return True
    return not state.distributed and state.deadline is not None and time.perf_counter() > state.deadline


def out_of_budget(state: TrainingState, epoch: int) -> bool:
    """True when the planned epochs are done (every rank has the same plan)."""
    if state.config.budget_minutes is None or epoch < state.planned_epochs:
        return False
    if state.main and epoch < state.config.epochs:
        elapsed = (time.perf_counter() - state.started) / 60
        logger.info(
            "time budget reached after epoch %d (%.1f of %.1f min)", epoch, elapsed, state.config.budget_minutes
        )
    return True
