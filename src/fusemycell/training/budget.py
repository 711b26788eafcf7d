"""The time budget (``training.budget_minutes``): counted from the first optimizer step, held on a busy machine.

:class:`TimeBudget` is the budget's clock and what it has measured: the recent time of an optimizer step,
and per epoch the validation on patches, the validation on whole volumes and the checkpoint. Three
decisions are made from them, by rank 0; every rank follows its plan (:func:`share_plan`):

* **the plan** (:func:`fusemycell.training.budget_steps.plan_budget`): the optimizer steps and
  epochs that fit in the time left, the learning-rate schedule spread over those steps, and whether
  the epoch ending validates whole volumes. It is first made after :data:`PROBE_STEPS` timed
  optimizer steps of the first epoch (they count as training), again every quarter of an epoch's
  steps, and at the end of every epoch's steps (before its validation, whose cost is set aside
  first: when no further epoch fits, this one is the last);
* **whole-volume validation** (:func:`validate_volumes_now`, :func:`volumes_due`): paced by its
  measured cost so that it takes at most ``training.volume_validation_share`` of the budget, spread
  evenly over the time, and always on the last epoch (the best-epoch choice sees the final weights);
* **time up** (:func:`fusemycell.training.budget_steps.budget_spent`, before every optimizer step):
  the planned steps are taken, or the next step and the end of the epoch (its validation, whole
  volumes included, and its checkpoint, scaled by how much slower steps have become since they were
  measured) would end past the budget.

Without a budget, every epoch validates whole volumes and nothing stops early. This module holds the
budget's state-free parts; :mod:`fusemycell.training.budget_steps` applies them to a run's
:class:`~fusemycell.training.state.TrainingState`. No Kedro import.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fusemycell.training.schedule import steps_that_fit

logger = logging.getLogger(__name__)

#: Optimizer steps timed (after one warm-up step) before the first plan.
PROBE_STEPS = 4
#: Steps of the recent mean that the plan and the time-up check use (they follow a machine that slows down).
RECENT_STEPS = 8
#: Exact tiling reads every tile with its halo: whole-volume prediction costs more per voxel than a patch's
#: forward pass. Used only until the first whole-volume validation is timed.
HALO_COST = 2.0


def now() -> float:
    """The training clock in seconds (:data:`CLOCK`; tests replace it by a clock of fake step times)."""
    return CLOCK()


CLOCK: Callable[[], float] = time.perf_counter


@dataclass(frozen=True)
class BudgetPlan:
    """What rank 0 planned; every rank follows it."""

    step_limit: int
    """Optimizer steps of the run (counted by the scheduler) when training stops."""
    epochs: int
    """The epoch training ends with."""
    volumes_now: bool = False
    """Planned at the end of an epoch's steps: that epoch validates whole volumes."""

    def tensor(self) -> torch.Tensor:
        return torch.tensor([self.step_limit, self.epochs, float(self.volumes_now)], dtype=torch.float64)

    @classmethod
    def of(cls, values: torch.Tensor) -> BudgetPlan:
        step_limit, epochs, now = (int(round(float(v))) for v in values.cpu())
        return cls(step_limit, epochs, bool(now))


@dataclass
class EpochCosts:
    """Measured seconds of what an epoch costs besides its steps (None until measured)."""

    patch_validation_s: float | None = None
    volume_validation_s: float | None = None
    checkpoint_s: float | None = None
    step_s_when_measured: float | None = None
    """The recent step time when the patches' validation was measured: a slower machine now makes the
    validation and the checkpoint slower too."""
    step_s_when_volumes: float | None = None
    """The recent step time when the whole volumes' validation was measured."""


@dataclass
class TimeBudget:
    """``budget_minutes`` of training, validation and checkpoints, from the first optimizer step."""

    seconds: float
    volume_share: float
    """At most this share of the budget goes to whole-volume validation."""
    clock: Callable[[], float] = now
    started: float | None = None
    """When the first optimizer step started (None before)."""
    steps_timed: int = 0
    """Optimizer steps taken, the first (warm-up) included."""
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    costs: EpochCosts = field(default_factory=EpochCosts)
    volume_spent_s: float = 0.0
    """Seconds spent validating whole volumes so far."""
    forward_s_per_voxel: float | None = None
    """A patch's forward pass without gradients, per voxel (measured once, after the probe steps)."""
    planned_at: int | None = None
    """``steps_timed`` when the last plan was made."""
    _step_started: float | None = None

    # -- the clock -----------------------------------------------------------------------------
    def step_starts(self) -> None:
        """An optimizer step (its group of micro-batches) begins; the first one starts the budget."""
        self._step_started = self.clock()
        if self.started is None:
            self.started = self._step_started

    def step_ends(self) -> None:
        """An optimizer step ended: its time counts in the recent mean (except the very first, a warm-up)."""
        if self._step_started is not None:
            if self.steps_timed:
                self.recent.append(self.clock() - self._step_started)
            self.steps_timed += 1
            self._step_started = None

    @property
    def elapsed(self) -> float:
        """Seconds since the first optimizer step."""
        return 0.0 if self.started is None else self.clock() - self.started

    @property
    def remaining(self) -> float:
        return self.seconds - self.elapsed

    @property
    def step_s(self) -> float | None:
        """Mean of the recent optimizer steps (None before one is timed)."""
        return sum(self.recent) / len(self.recent) if self.recent else None

    @property
    def probed(self) -> bool:
        """The probe steps are timed: the first plan can be made."""
        return self.steps_timed > PROBE_STEPS

    def replan_due(self, steps_per_epoch: int) -> bool:
        """In the middle of an epoch: the probe steps are timed and no plan is made yet, or a quarter of an
        epoch's steps were taken since the last (a long epoch follows a machine that slows down or speeds up).
        It depends on step counts only: every rank of a run agrees."""
        if not self.probed:
            return False
        return self.planned_at is None or self.steps_timed - self.planned_at >= max(PROBE_STEPS, steps_per_epoch // 4)

    # -- what an epoch costs besides its steps --------------------------------------------------
    def slowdown(self, then: float | None = None) -> float:
        """How much slower a step is now than when a cost was measured (``then``, the step time of that moment;
        by default when the patches' validation was), at least 1."""
        then = self.costs.step_s_when_measured if then is None else then
        step = self.step_s
        return max(1.0, step / then) if then and step else 1.0

    def measured(self, *, patches_s: float, volumes_s: float | None) -> None:
        """An epoch's validation took these seconds (``volumes_s`` None: whole volumes not validated)."""
        self.costs.patch_validation_s = patches_s
        self.costs.step_s_when_measured = self.step_s
        if volumes_s is not None:
            self.costs.volume_validation_s = volumes_s
            self.costs.step_s_when_volumes = self.step_s
            self.volume_spent_s += volumes_s

    def checkpointed(self, seconds: float) -> None:
        """The epoch's checkpoint (and best model) took ``seconds``."""
        self.costs.checkpoint_s = seconds

    def epoch_cost(self, patch_voxels: int) -> float:
        """Validation on patches and checkpoint of one epoch (estimated from a forward pass until measured)."""
        costs = self.costs
        if costs.patch_validation_s is None:  # the forward pass was timed at the current step time
            return (self.forward_s_per_voxel or 0.0) * patch_voxels + (costs.checkpoint_s or 0.0)
        return (costs.patch_validation_s + (costs.checkpoint_s or 0.0)) * self.slowdown()

    def volume_cost(self, volume_voxels: int) -> float:
        """One validation on whole volumes (estimated from a forward pass until measured)."""
        cost = self.costs.volume_validation_s
        if cost is None:
            return (self.forward_s_per_voxel or 0.0) * volume_voxels * HALO_COST
        return cost * self.slowdown(self.costs.step_s_when_volumes)

    def time_up(self, end_cost_s: float) -> bool:
        """The next step and the end of the epoch (``end_cost_s``) would end past the budget."""
        return self.remaining < (self.step_s or 0.0) + end_cost_s


def volume_validations(epochs: int, allowance_s: float, volume_s: float) -> int:
    """Whole-volume validations over ``epochs`` within ``allowance_s`` (``volume_s`` each): at least one,
    the last epoch's, whatever it costs."""
    if epochs <= 0:
        return 0
    return epochs if volume_s <= 0 else min(epochs, max(1, int(allowance_s / volume_s)))


def validate_volumes_now(*, spent_s: float, volume_s: float, share: float, budget_s: float, at_s: float) -> bool:
    """Whether an epoch that is not the last validates whole volumes: when, with it, they have taken no more
    than their share of the time until then (``at_s``, the end of this validation), one more validation (the
    last epoch's) set aside: spread evenly over the budget, and never past the share."""
    allowance = share * budget_s - volume_s  # the last epoch's validation is always kept
    return spent_s + volume_s <= allowance * min(1.0, at_s / budget_s)


def make_plan(
    budget: TimeBudget,
    *,
    remaining_s: float,
    steps_left_in_epoch: int,
    steps_per_epoch: int,
    max_epochs: int,
    per_epoch: float,
    volume_s: float,
) -> tuple[int, int, int]:
    """``(optimizer steps, epochs, whole-volume validations)`` that fit in ``remaining_s``, from the step time
    ``budget`` measured: every epoch costs ``per_epoch`` seconds besides its steps, every whole-volume
    validation ``volume_s``, and they take at most the budget's share (the last epoch's always). With
    ``steps_left_in_epoch`` above 0 an epoch is under way with that many steps left, the first of the (at
    most ``max_epochs``) epochs."""
    step_s = budget.step_s or 1e-9
    allowance = max(0.0, budget.volume_share * budget.seconds - budget.volume_spent_s)
    first = steps_left_in_epoch if steps_left_in_epoch > 0 else None
    steps, epochs = steps_that_fit(remaining_s, step_s, per_epoch, steps_per_epoch, max_epochs, first)
    for _ in range(3):  # the validations' reserve shortens the plan, which changes how many there are
        validations = volume_validations(epochs, allowance, volume_s)
        steps, epochs = steps_that_fit(
            remaining_s - validations * volume_s, step_s, per_epoch, steps_per_epoch, max_epochs, first
        )
    if first is not None:
        epochs = max(1, epochs)  # the epoch under way ends, even with no step left
    return steps, epochs, volume_validations(epochs, allowance, volume_s)


def share_plan(plan: BudgetPlan, device: torch.device, distributed: bool) -> BudgetPlan:
    """Rank 0's plan on every rank (the broadcast tensor itself is read back: on CUDA, a copy is sent)."""
    if not distributed:
        return plan
    values = plan.tensor().to(device)
    torch.distributed.broadcast(values, src=0)
    return BudgetPlan.of(values)


def volumes_due(epoch: int, plan: BudgetPlan | None, ending: bool) -> bool:
    """Whether ``epoch`` validates whole volumes: without a plan always; else when it is the last (``ending``,
    or the plan ends with it) or the plan made at the end of its steps says so."""
    if plan is None or ending or epoch >= plan.epochs:
        return True
    return plan.volumes_now


def log_plan(budget: TimeBudget, plan: BudgetPlan, steps_taken: int, epoch: int, validations: int | None) -> None:
    """The plan (``validations``: of whole volumes still planned, None without volumes)."""
    first = epoch == 0
    logger.info(
        "time budget %.1f min (%.1f left): %d more optimizer steps (%.2f s each) up to epoch %d; learning rate "
        "planned on %d steps%s%s",
        budget.seconds / 60,
        max(0.0, budget.remaining) / 60,
        plan.step_limit - steps_taken,
        budget.step_s or float("nan"),
        plan.epochs,
        plan.step_limit,
        ""
        if validations is None
        else f"; whole volumes validated about {validations} more time(s), the last epoch included "
        f"(at most {100 * budget.volume_share:.0f}% of the budget)",
        f" (from the first {PROBE_STEPS} timed steps)" if first else f" (after epoch {epoch}'s steps)",
    )
