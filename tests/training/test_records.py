"""The training summary on the card: steps, patches and time shares computed from the epochs' metrics."""

from __future__ import annotations

import math

import pytest
import torch

from fusemycell.devices import Precision
from fusemycell.training.checkpoint import EpochMetrics
from fusemycell.training.records import training_summary


def _epoch(epoch: int, *, steps: int, train_s: float, validation_s: float, total_s: float, **extra) -> EpochMetrics:
    nan = float("nan")
    return EpochMetrics(
        epoch=epoch,
        train_loss=nan,
        val_loss=nan,
        val_ssim=nan,
        val_ssim_input=nan,
        val_nssim=nan,
        learning_rate=1e-3,
        epoch_time_s=total_s,
        patches_per_s=extra.pop("patches_per_s", 2.0),
        voxels_per_s=nan,
        peak_rss_mb=nan,
        peak_device_mb=nan,
        optimizer_steps=steps,
        train_time_s=train_s,
        validation_time_s=validation_s,
        **extra,
    )


FLOAT32 = Precision(enabled=False, dtype=torch.float32, use_scaler=False)


def test_rates_are_per_minute_of_training_and_the_validation_share_of_the_whole_time():
    epochs = [
        _epoch(1, steps=10, train_s=30.0, validation_s=6.0, total_s=40.0),
        _epoch(2, steps=20, train_s=60.0, validation_s=0.0, total_s=60.0, planned_steps=90, stopped_by_budget=True),
    ]
    summary = training_summary(epochs, FLOAT32)
    assert summary.epochs == 2 and summary.optimizer_steps == 30
    assert summary.steps_per_minute == pytest.approx(20.0)  # 30 steps in 90 s of training
    assert summary.patches == 180 and summary.patches_per_minute == pytest.approx(120.0)  # 2 patches/s
    assert summary.validation_share == pytest.approx(0.06)  # 6 s of 100 s
    assert summary.minutes == pytest.approx(100 / 60)
    assert summary.planned_steps == 90 and summary.stopped_by_budget is True
    assert summary.precision == "float32"


def test_an_epoch_without_a_timed_training_part_is_left_out_of_the_rates():
    epochs = [
        _epoch(1, steps=0, train_s=math.nan, validation_s=math.nan, total_s=5.0),
        _epoch(2, steps=12, train_s=60.0, validation_s=3.0, total_s=65.0),
    ]
    summary = training_summary(epochs, Precision(enabled=True, dtype=torch.bfloat16, use_scaler=False))
    assert summary.steps_per_minute == pytest.approx(12.0)
    assert summary.validation_share == pytest.approx(3.0 / 70.0)
    assert summary.precision == "bfloat16" and summary.planned_steps is None and summary.stopped_by_budget is False
