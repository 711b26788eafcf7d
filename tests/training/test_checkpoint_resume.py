"""Resuming with settings that change the meaning of the optimizer's or the schedule's state says so plainly."""

import logging

import pytest

from fusemycell.training.checkpoint import TrainingCheckpoint, resume_changes
from fusemycell.training.config import TrainingConfig
from fusemycell.training.engine import LAST_CHECKPOINT, train
from tests.training.conftest import make_store


def _config(tmp_path, **changes):
    values = {
        "device": "cpu",
        "amp": False,
        "epochs": 1,
        "batch_size": 2,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "model": {"depth": 2, "base_channels": 4},
        "monitor": "val_nssim",  # patch stores only, no whole volumes
        "guard": False,
        **changes,
    }
    return TrainingConfig(**values)


@pytest.fixture
def stores(tmp_path):
    return make_store(tmp_path / "train", 8, seed=0), make_store(tmp_path / "val", 2, seed=1)


def test_resuming_with_another_batch_size_and_learning_rate_says_what_the_run_does(tmp_path, stores, caplog):
    train(_config(tmp_path, epochs=2), *stores)
    with caplog.at_level(logging.WARNING, logger="fusemycell.training.setup"):
        result = train(_config(tmp_path, epochs=3, resume=True, batch_size=4, learning_rate=5e-4), *stores)
    lines = [r.getMessage() for r in caplog.records if "resuming from" in r.getMessage()]
    batch = next(line for line in lines if "training.batch_size" in line)
    assert "training.batch_size is 2 in the checkpoint and 4 now" in batch
    assert "a batch now holds 4 patches instead of 2" in batch and "an epoch takes 2 optimizer steps" in batch
    rate = next(line for line in lines if "training.learning_rate" in line)
    assert "is 0.001 in the checkpoint and 0.0005 now" in rate and "trains on with 0.001" in rate
    assert "training.resume: false" in rate
    epochs = next(line for line in lines if "training.epochs" in line)
    assert "it reaches its minimum learning rate after epoch 2, and epoch 3 trains at that minimum" in epochs
    # what the warnings say is what happened: the third epoch ran at the minimum of the checkpoint's rate
    third = result.history[-1]
    assert third.epoch == 3 and third.learning_rate == pytest.approx(0.02 * 1e-3)  # min_lr_fraction x 0.001


def test_resuming_with_the_same_settings_says_nothing(tmp_path, stores, caplog):
    train(_config(tmp_path, epochs=1), *stores)
    with caplog.at_level(logging.WARNING, logger="fusemycell.training.setup"):
        train(_config(tmp_path, epochs=1, resume=True), *stores)  # nothing left to train, nothing changed
    assert not [r for r in caplog.records if "in the checkpoint and" in r.getMessage()]


def test_more_epochs_on_a_kept_schedule_says_when_it_reaches_its_minimum(tmp_path):
    saved = _config(tmp_path, epochs=2).model_dump(mode="json")
    lines = resume_changes(
        saved, _config(tmp_path, epochs=5), steps_taken=8, planned_steps=8, steps_per_epoch=4, epoch=2
    )
    assert lines == [
        "training.epochs is 2 in the checkpoint and 5 now: the learning-rate schedule kept from the checkpoint was "
        "planned on 8 optimizer steps; it reaches its minimum learning rate after epoch 2, and epochs 3 to 5 train "
        "at that minimum; to plan anew, start over (training.resume: false)"
    ]


def test_the_checkpoint_records_the_settings_it_is_compared_with(tmp_path, stores):
    train(_config(tmp_path), *stores)
    saved = TrainingCheckpoint.read(tmp_path / "ckpt" / LAST_CHECKPOINT).training_config
    assert {"batch_size", "accumulation_steps", "learning_rate", "weight_decay", "epochs"} <= set(saved)


def test_a_damaged_best_model_stops_the_resume_saying_what_the_file_is(tmp_path, stores):
    import torch

    from fusemycell.models.model_file import CheckpointError
    from fusemycell.training.engine import BEST_MODEL

    train(_config(tmp_path, epochs=2), *stores)
    last = tmp_path / "ckpt" / LAST_CHECKPOINT
    payload = torch.load(last, weights_only=True)
    payload["best_epoch"] = 1  # the best epoch is not the checkpoint's own: its weights come from best.pt
    torch.save(payload, last)
    (tmp_path / "ckpt" / BEST_MODEL).write_bytes(b"")
    with pytest.raises(CheckpointError) as refused:
        train(_config(tmp_path, epochs=3, resume=True), *stores)
    message = str(refused.value)
    assert f"{tmp_path / 'ckpt' / BEST_MODEL}: cannot resume from it: it is an empty file (0 bytes)" in message
    assert "--params training.resume=false" in message and "inference.model_uri" not in message
