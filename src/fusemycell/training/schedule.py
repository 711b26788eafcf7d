"""The learning-rate schedule, and how many optimizer steps and epochs fit in a time budget."""

from __future__ import annotations

import math


class CosineSchedule:
    """Linear warm-up then cosine decay over ``total_steps``; :meth:`plan` re-plans the total (time budget)."""

    def __init__(self, total_steps: int, warmup_fraction: float, min_fraction: float):
        self.warmup_fraction, self.min_fraction = warmup_fraction, min_fraction
        self.plan(total_steps)

    def plan(self, total_steps: int) -> None:
        """Spread the schedule over ``total_steps`` optimizer steps."""
        self.total_steps = max(1, int(total_steps))
        self.warmup = int(round(self.warmup_fraction * self.total_steps))

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return self.min_fraction + (1 - self.min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def steps_that_fit(
    remaining_s: float,
    step_s: float,
    epoch_overhead_s: float,
    steps_per_epoch: int,
    max_epochs: int,
    first_epoch_steps: int | None = None,
) -> tuple[int, int]:
    """``(optimizer steps, epochs)`` that fit in ``remaining_s``: each step costs ``step_s``, each epoch
    ``epoch_overhead_s`` more (validation, checkpoint). The last epoch may be shortened to use the time
    left, but not below a quarter of an epoch (its validation would cost more than its steps bring).

    ``first_epoch_steps``: an epoch is under way with that many steps left; it is the first of the
    epochs counted, and it ends (and is counted) however few of its steps fit."""
    steps_left, epochs_left = 0, 0
    under_way = first_epoch_steps is not None
    first = first_epoch_steps if under_way else steps_per_epoch
    for epochs in range(1, max_epochs + 1):
        affordable = max(0, int((remaining_s - epochs * epoch_overhead_s) / max(step_s, 1e-9)))
        whole = first + (epochs - 1) * steps_per_epoch
        steps = min(whole, affordable)
        in_last = steps - (whole - (first if epochs == 1 else steps_per_epoch))
        if not (epochs == 1 and under_way) and in_last < max(1, steps_per_epoch // 4):
            break
        steps_left, epochs_left = steps, epochs
    return steps_left, epochs_left
