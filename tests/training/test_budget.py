"""The time budget (``fusemycell.training.budget``): counted from the first step, validation included, held.

Time is a fake clock here (``fake_steps``: one second per optimizer step, chosen seconds per validation or
checkpoint), so every decision is exact and independent of the machine's speed.
"""

import logging
import math

import pytest

from fusemycell.training.budget import (
    PROBE_STEPS,
    BudgetPlan,
    TimeBudget,
    make_plan,
    validate_volumes_now,
    volume_validations,
    volumes_due,
)
from fusemycell.training.engine import train
from fusemycell.training.records import outcome
from fusemycell.training.schedule import steps_that_fit
from fusemycell.training.validation_volumes import VolumeValidation
from tests.training.conftest import FakeClock, make_store
from tests.training.test_engine import _config
from tests.training.test_steps import _identity, _volume_pairs


def _budget(seconds=100.0, share=0.15, step_s=1.0, steps=6):
    clock = FakeClock()
    budget = TimeBudget(seconds, share, clock=clock)
    for _ in range(steps):
        budget.step_starts()
        clock.advance(step_s)
        budget.step_ends()
    return budget, clock


def test_the_budget_starts_with_the_first_step_and_times_all_but_that_warm_up():
    clock = FakeClock()
    budget = TimeBudget(60.0, 0.15, clock=clock)
    clock.advance(30)  # set-up before the first step is not training
    assert budget.elapsed == 0 and budget.step_s is None
    budget.step_starts()
    clock.advance(9)  # the first step builds kernels: not what a step costs
    budget.step_ends()
    for _ in range(PROBE_STEPS):
        budget.step_starts()
        clock.advance(2)
        budget.step_ends()
    assert budget.elapsed == 9 + 2 * PROBE_STEPS and budget.step_s == 2 and budget.probed


def test_time_is_up_when_the_next_step_and_the_end_of_the_epoch_would_pass_the_budget():
    budget, clock = _budget(seconds=20, steps=6)  # 6 s spent, 1 s a step
    assert not budget.time_up(end_cost_s=12)  # 6 + 1 + 12 = 19 s
    assert budget.time_up(end_cost_s=14)  # 21 s: stop now, validate, checkpoint
    clock.advance(13)
    assert not budget.time_up(end_cost_s=0)  # 19 s spent: one more step ends at 20 s
    clock.advance(0.5)
    assert budget.time_up(end_cost_s=0)  # 19.5 s: one more would end past 20 s


def test_a_machine_that_became_slower_makes_validation_and_checkpoints_slower_too():
    budget, clock = _budget(steps=6)
    budget.measured(patches_s=4.0, volumes_s=10.0)
    budget.checkpointed(1.0)
    assert budget.epoch_cost(patch_voxels=0) == pytest.approx(5.0) and budget.volume_cost(0) == pytest.approx(10.0)
    for _ in range(8):  # another program starts: steps take three times as long
        budget.step_starts()
        clock.advance(3.0)
        budget.step_ends()
    assert budget.slowdown() == pytest.approx(3.0)
    assert budget.epoch_cost(patch_voxels=0) == pytest.approx(15.0) and budget.volume_cost(0) == pytest.approx(30.0)
    budget.measured(patches_s=12.0, volumes_s=None)  # patches validated again at the busy speed, volumes not
    assert budget.epoch_cost(patch_voxels=0) == pytest.approx(13.0)  # measured busy: not scaled again
    assert budget.volume_cost(0) == pytest.approx(30.0)  # still measured idle: scaled by its own step time


def test_until_measured_validation_costs_are_estimated_from_a_timed_forward_pass():
    budget, _ = _budget()
    budget.forward_s_per_voxel = 1e-6
    assert budget.epoch_cost(patch_voxels=2_000_000) == pytest.approx(2.0)
    assert budget.volume_cost(volume_voxels=1_000_000) > 1.0  # tiles are read with their halo


def test_whole_volume_validations_are_paced_within_their_share_and_the_last_epoch_is_always_one():
    assert volume_validations(10, allowance_s=15.0, volume_s=5.0) == 3
    assert volume_validations(10, allowance_s=100.0, volume_s=5.0) == 10  # affordable: every epoch
    assert volume_validations(10, allowance_s=3.0, volume_s=5.0) == 1  # too dear: the last one only
    # a 100 s budget, 15 s for whole volumes, 5 s each: 5 s are kept for the last epoch, the other 10 s are
    # spread over the time: an epoch ending at t validates when the spending stays under 10 s x t / 100 s
    spent, validated = 0.0, []
    for end in range(10, 100, 10):  # an epoch ends every 10 s
        if validate_volumes_now(spent_s=spent, volume_s=5.0, share=0.15, budget_s=100.0, at_s=end):
            spent += 5.0
            validated.append(end)
    assert validated == [50] and spent + 5.0 <= 15.0  # half-way, then the last epoch's: within the share
    assert not validate_volumes_now(spent_s=0.0, volume_s=20.0, share=0.15, budget_s=100.0, at_s=100.0)
    plan = BudgetPlan(step_limit=100, epochs=10, volumes_now=False)
    assert not volumes_due(7, plan, ending=False) and volumes_due(10, plan, ending=False)  # the last epoch
    assert volumes_due(7, plan, ending=True)  # the budget ends training in epoch 7: its weights are scored
    assert volumes_due(7, BudgetPlan(100, 10, volumes_now=True), ending=False)
    assert all(volumes_due(e, None, ending=False) for e in range(1, 5))  # without a budget: every epoch


@pytest.mark.parametrize("step_s", [0.2, 1.0, 3.0])
@pytest.mark.parametrize("volume_s", [0.0, 4.0, 40.0])
def test_a_plan_fits_the_time_left_and_bounds_whole_volume_validation(step_s, volume_s):
    budget, _ = _budget(seconds=300, step_s=step_s, steps=6)
    remaining = budget.remaining
    steps, epochs, validations = make_plan(
        budget,
        remaining_s=remaining,
        steps_left_in_epoch=0,
        steps_per_epoch=20,
        max_epochs=100,
        per_epoch=2.0,
        volume_s=volume_s,
    )
    assert steps * step_s + epochs * 2.0 + validations * volume_s <= remaining + 1e-9  # it fits
    if validations > 1:  # one, the last epoch's, is kept whatever it costs
        assert validations * volume_s <= 0.15 * 300 + 1e-9
    assert epochs > 0 and steps >= (epochs - 1) * 20  # the time is used: epochs are whole but the last
    assert remaining - (steps * step_s + epochs * 2.0 + validations * volume_s) < 20 * step_s + 2.0 + volume_s


def test_a_plan_made_in_the_first_epoch_counts_the_steps_left_in_it():
    # 5 steps taken, 15 left in this epoch, 1 s a step, 100 s in all (6 spent): the epoch under way ends,
    # then whole epochs of 20 steps, the last shortened
    assert steps_that_fit(94, 1.0, 0.0, 20, max_epochs=10, first_epoch_steps=15) == (94, 5)
    assert steps_that_fit(10, 1.0, 0.0, 20, max_epochs=10, first_epoch_steps=15) == (10, 1)  # ends early


def _volumes(tmp_path):
    return VolumeValidation(_volume_pairs(tmp_path), _identity)


def _timed_run(tmp_path, fake_steps, caplog, *, patches_per_epoch, budget_minutes):
    """A budgeted run on the fake clock with whole-volume validation: its result, the seconds it took, its config."""
    stores = make_store(tmp_path / "t", 4, seed=0), make_store(tmp_path / "v", 2, seed=1)
    config = _config(
        tmp_path,
        epochs=50,
        patches_per_epoch=patches_per_epoch,
        budget_minutes=budget_minutes,
        monitor="val_volume_nssim",
    )
    started = fake_steps.now
    with caplog.at_level(logging.INFO, logger="fusemycell.training"):
        result = train(config, *stores, volumes=_volumes(tmp_path))
    return result, fake_steps.now - started, config


def test_a_slow_first_epoch_is_cut_to_the_budget_validation_included(tmp_path, fake_steps, caplog):
    """A user saw "time budget reached after epoch 1 (11.3 of 5.0 min)": the first epoch was never timed."""
    fake_steps.costs.update(validate=2.0, validate_volumes=3.0, save_checkpoint=0.5)
    fake_steps.forward_s_per_voxel = 2.0 / (2 * 8 * 16 * 16)  # two validation patches: 2 s
    result, elapsed, _ = _timed_run(tmp_path, fake_steps, caplog, patches_per_epoch=80, budget_minutes=0.5)
    assert [m.epoch for m in result.history] == [1]  # an epoch is 40 steps: 40 s of a 30 s budget
    assert result.history[0].optimizer_steps < 40 and math.isfinite(result.history[0].val_volume_nssim)
    assert elapsed <= 30 * 1.1 + 1  # within 10 % of the budget, plus one step
    assert result.ended_by == "budget" and "cut it short" not in caplog.text
    assert f"from the first {PROBE_STEPS} timed steps" in caplog.text  # planned before epoch 1 ended


def test_the_budget_holds_over_many_epochs_with_every_cost_counted(tmp_path, fake_steps, caplog):
    fake_steps.costs.update(validate=1.0, validate_volumes=4.0, save_checkpoint=0.5)
    fake_steps.forward_s_per_voxel = 1.0 / (2 * 8 * 16 * 16)
    result, elapsed, config = _timed_run(tmp_path, fake_steps, caplog, patches_per_epoch=10, budget_minutes=2.0)
    history = result.history
    assert 120 * 0.9 <= elapsed <= 120 * 1.1 + 1  # the budget is used, and held
    validated = [m.epoch for m in history if math.isfinite(m.val_volume_nssim)]
    assert validated[-1] == history[-1].epoch  # the final weights are scored
    assert 4.0 * len(validated) <= 0.15 * 120 + 4.0  # whole volumes: their share, the last one aside
    assert 1 < len(validated) < len(history)
    assert result.best_epoch in validated
    # the learning rate was planned on the steps that ran: the warm-up is a small share of them
    steps = sum(m.optimizer_steps for m in history)
    assert history[-1].planned_steps == steps and "ran to its end" in caplog.text
    assert 0.03 * steps <= round(config.warmup_fraction * history[-1].planned_steps) <= 0.07 * steps


def test_a_machine_that_becomes_busy_half_way_still_ends_within_the_budget(tmp_path, fake_steps, caplog):
    """Another program starts near the end: steps, validation and checkpoints take three times as long."""
    fake_steps.costs.update(validate=1.0, save_checkpoint=0.5)
    fake_steps.forward_s_per_voxel = 1.0 / (2 * 8 * 16 * 16)

    def busy_after_epoch_9(metrics):  # of 11 planned at the idle speed
        if metrics.epoch == 9:
            fake_steps.step_s = 3.0
            fake_steps.costs.update(validate=3.0, save_checkpoint=1.5)

    stores = make_store(tmp_path / "t", 4, seed=0), make_store(tmp_path / "v", 2, seed=1)
    config = _config(tmp_path, epochs=50, patches_per_epoch=20, budget_minutes=2.0)
    started = fake_steps.now
    with caplog.at_level(logging.INFO, logger="fusemycell.training"):
        result = train(config, *stores, epoch_callback=busy_after_epoch_9)
    elapsed = fake_steps.now - started
    assert elapsed <= 120 * 1.1 + 3.0  # within 10 % of the budget, plus one (slow) step
    assert result.history[-1].stopped_by_budget and result.ended_by == "budget"
    steps, planned_idle = sum(m.optimizer_steps for m in result.history), result.history[8].planned_steps
    # re-planned every quarter of an epoch: the learning rate follows the busy machine down to the steps
    # that still fit, and ends its decay with them
    assert result.history[-1].planned_steps < planned_idle - 5
    assert steps >= 0.98 * result.history[-1].planned_steps and "ran to its end" in caplog.text


def test_the_warm_up_is_a_small_share_of_the_steps_taken_and_ends_in_the_first_epoch(tmp_path, fake_steps):
    """Planned on ``steps_per_epoch x epochs`` (80 epochs), the first of 5 epochs climbed to a quarter of the
    peak learning rate; planned on the steps that fit, it reaches the peak and starts the decay."""
    stores = make_store(tmp_path / "t", 4, seed=0), make_store(tmp_path / "v", 2, seed=1)
    config = _config(tmp_path, epochs=80, patches_per_epoch=128, budget_minutes=5.5)  # 64 steps of 1 s an epoch
    result = train(config, *stores)
    history, steps = result.history, sum(m.optimizer_steps for m in result.history)
    assert len(history) == 5 and steps == history[-1].planned_steps  # planned on what ran
    warm_up = round(config.warmup_fraction * steps)
    assert warm_up < history[0].optimizer_steps  # over before the first epoch ends
    assert 0.75 * config.learning_rate < history[0].learning_rate < config.learning_rate  # past the peak


def test_a_time_budget_stops_training_and_keeps_the_best_epoch(tmp_path, fake_steps, caplog):
    """10 s of steps of 1 s, epochs of 3 steps: 10 steps, in epochs of 3, 3, 3 and 1 (the schedule's plan)."""
    caplog.set_level(logging.INFO, logger="fusemycell.training")
    stores = make_store(tmp_path / "t", 6, seed=0), make_store(tmp_path / "v", 3, seed=1)
    result = train(_config(tmp_path, epochs=50, budget_minutes=10 / 60), *stores)
    assert [m.optimizer_steps for m in result.history] == [3, 3, 3, 1]
    assert result.best_epoch in {h.epoch for h in result.history} and result.ended_by == "budget"
    summary = result.model.card.training  # the card itself says what ended training and what was planned
    assert summary.stopped_by_budget and summary.optimizer_steps == 10 and summary.planned_steps == 10
    assert "time budget" in caplog.text and "more optimizer steps" in caplog.text
    assert "4 epoch(s), 10 optimizer steps" in caplog.text and "after epoch 4 of the 50 asked for" in caplog.text


def test_the_closing_summary_says_what_ran_and_whether_the_budget_cut_it_short(monkeypatch):
    from fusemycell.training.checkpoint import EpochMetrics

    def epoch(number, steps, planned, budget=False):
        values = dict.fromkeys(("train_loss", "val_loss", "val_ssim", "val_ssim_input", "val_nssim"), 0.5)
        return EpochMetrics(
            number, **values, learning_rate=1e-3, epoch_time_s=60, patches_per_s=1, voxels_per_s=1,
            peak_rss_mb=1, peak_device_mb=0, optimizer_steps=steps, planned_steps=planned,
            stopped_by_budget=budget,
        )  # fmt: skip

    planned = [epoch(1, 100, 250), epoch(2, 100, 250), epoch(3, 50, 250, budget=True)]
    text = outcome(planned, 80, 5.0)
    assert "3 epoch(s), 250 optimizer steps in 3.0 min (time budget 5 min)" in text
    assert "after epoch 3 of the 80 asked for" in text and "cut it short" not in text
    cut = outcome([epoch(1, 128, 640, budget=True)], 80, 5.0)
    assert "cut it short of its learning-rate schedule: 128 of the 640 steps" in cut
    assert "all 2 epochs asked for ran" in outcome(planned[:2], 2, None)
    assert "stopped early after epoch 2 of the 80" in outcome(planned[:2], 80, None)

    # the run's closing summary (hooks.summary) says it, from the history the training node saved
    from dataclasses import asdict

    import mlflow
    import pandas as pd
    from kedro.io import DataCatalog, MemoryDataset

    from fusemycell.hooks.summary import summary_lines
    from fusemycell.training.config import TrainingConfig

    # no MLflow run line: an earlier test of this process may have left a last active run
    monkeypatch.setattr(mlflow, "active_run", lambda: None)
    monkeypatch.setattr(mlflow, "last_active_run", lambda: None)
    table = pd.DataFrame([asdict(m) for m in planned]).assign(kept=[False, True, False])
    catalog = DataCatalog({"training_history": MemoryDataset(table)})
    lines = summary_lines({"training_history"}, catalog, {}, TrainingConfig(epochs=80, budget_minutes=5.0))
    assert lines == ["  " + text]


def _rank_with_its_own_step_time(job, rank):
    """One process of a DDP run whose steps take 1 s on rank 0 and 3 s on rank 1 (its fake clock; it also
    sleeps): each rank records the plan it made itself and the plan it follows."""
    import json
    import time
    from dataclasses import asdict
    from pathlib import Path

    from fusemycell.training import budget, budget_steps, steps
    from fusemycell.training.engine import run_trainer

    clock = FakeClock()
    budget.CLOCK = clock
    take_step, share = steps.optimizer_step, budget_steps.share_plan

    def slow_step(state):
        take_step(state)
        if rank == 1:
            time.sleep(0.01)
        clock.advance(1.0 if rank == 0 else 3.0)

    plans = []

    def recorded_share(plan, device, distributed):
        followed = share(plan, device, distributed)
        plans.append({"own": asdict(plan), "followed": asdict(followed)})
        return followed

    steps.optimizer_step, budget_steps.share_plan = slow_step, recorded_share
    steps.forward_time_per_voxel = lambda state, batch: 0.0
    try:
        return run_trainer(job, rank)
    finally:
        Path(job.config.checkpoint_dir).parent.joinpath(f"plans_{rank}.json").write_text(json.dumps(plans))


@pytest.mark.slow
def test_under_ddp_every_rank_follows_rank_0s_plan_and_the_run_ends_cleanly(tmp_path, stores):
    """2 CPU processes (gloo) whose steps take 1 s and 3 s: the same plans, the same steps, a clean end."""
    import json

    import torch

    from fusemycell.training.launch import launch
    from fusemycell.training.state import TrainingJob

    config = _config(tmp_path / "run", devices=2, epochs=50, patches_per_epoch=8, budget_minutes=20 / 60)
    job = TrainingJob(config, str(stores[0]), str(stores[1]))
    result = launch(job, torch.device("cpu"), _rank_with_its_own_step_time)
    plans = [json.loads((tmp_path / "run" / f"plans_{rank}.json").read_text()) for rank in (0, 1)]
    assert len(plans[0]) == len(plans[1]) >= 2  # planned together: after the probe steps, after every epoch
    assert [p["followed"] for p in plans[0]] == [p["followed"] for p in plans[1]]
    assert all(p["followed"] == p["own"] for p in plans[0])  # rank 0's own plan is the plan
    assert plans[1][0]["own"]["step_limit"] < plans[0][0]["own"]["step_limit"]  # rank 1 alone would stop sooner
    # the run ended where rank 0 planned it, on both ranks (the engine checks the replicas are identical)
    steps = sum(m.optimizer_steps for m in result.history)
    assert result.ended_by == "budget" and steps == plans[0][-1]["followed"]["step_limit"]
    assert result.history[-1].planned_steps == steps  # the schedule ran to its end on every rank
    assert 15 <= steps <= 20  # 20 fake seconds of steps of 1 s on rank 0
