"""Each step of the trainer runs alone on a training state: start, one training step, validation, end of epoch."""

import math
import pickle
from functools import partial

import numpy as np
import pytest
import torch

from fusemycell.inference.predictor import predict_whole_volume
from fusemycell.inference.tiling import TileSettings
from fusemycell.io.tiff import write_volume
from fusemycell.training.checkpoint import TrainingCheckpoint
from fusemycell.training.engine import end_epoch
from fusemycell.training.setup import start
from fusemycell.training.state import TrainingJob
from fusemycell.training.steps import EpochTotals, epoch_loader, train_epoch, train_step, validate_volumes
from fusemycell.training.validation_volumes import VolumeValidation
from tests.training.test_engine import _config


def _state(tmp_path, stores, **changes):
    train_store, val_store = stores
    return start(TrainingJob(_config(tmp_path, **changes), str(train_store), str(val_store)), rank=0)


def test_start_builds_a_complete_state_ready_for_its_first_epoch(tmp_path, stores):
    state = _state(tmp_path, stores, epochs=3, batch_size=2)
    assert state.start_epoch == 1 and state.history == [] and state.planned_epochs == 3
    assert state.steps_per_epoch == 3  # six patches, batches of two
    assert state.scheduler.last_epoch == 0 and state.wrapped is state.model
    assert state.card.architecture == state.model.unet.config


def test_one_training_step_alone_moves_the_weights_and_the_schedule(tmp_path, stores):
    state = _state(tmp_path, stores, batch_size=2, grad_clip=1.0)
    before = {name: value.clone() for name, value in state.model.unet.state_dict().items()}
    batch = next(iter(epoch_loader(state, epoch=1)))
    totals = EpochTotals()
    train_step(state, batch, totals, step=0, batches=3)
    assert totals.steps == 1 and totals.seen == 2 and math.isfinite(totals.loss) and totals.loss > 0
    assert state.scheduler.last_epoch == 1  # one optimizer step, one step of the learning-rate schedule
    changed = [name for name, value in state.model.unet.state_dict().items() if not torch.equal(value, before[name])]
    assert changed


def test_a_step_inside_an_accumulation_group_only_accumulates(tmp_path, stores):
    state = _state(tmp_path, stores, batch_size=2, accumulation_steps=2)
    before = {name: value.clone() for name, value in state.model.unet.state_dict().items()}
    totals = EpochTotals()
    train_step(state, next(iter(epoch_loader(state, epoch=1))), totals, step=0, batches=3)
    assert totals.steps == 0 and state.scheduler.last_epoch == 0
    assert all(torch.equal(value, before[name]) for name, value in state.model.unet.state_dict().items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.trainable)  # kept for the group's step


def test_end_of_epoch_alone_writes_a_checkpoint_that_resumes(tmp_path, stores):
    state = _state(tmp_path, stores, epochs=2)
    metrics = train_epoch(state, 1)
    end_epoch(state, metrics)
    checkpoint = TrainingCheckpoint.read(state.last_path)
    assert checkpoint.epoch == 1 and [m.epoch for m in checkpoint.history] == [1]
    assert state.best.epoch == 1 and state.best_path.exists()
    resumed = _state(tmp_path, stores, epochs=2, resume=True)
    assert resumed.start_epoch == 2 and resumed.scheduler.last_epoch == state.scheduler.last_epoch
    for name, value in resumed.model.unet.state_dict().items():
        assert torch.equal(value, state.model.unet.state_dict()[name]), name


def _identity(network, card, single_view, position, device):
    """A stand-in for inference: the prediction is the input (N_SSIM 0 by the challenge's formula)."""
    calls.append((type(network).__name__, card.architecture.in_channels, single_view.shape, str(device)))
    return single_view


calls: list = []


def _volume_pairs(tmp_path):
    rng = np.random.default_rng(0)
    fused = np.zeros((12, 24, 24), np.float32)
    fused[3:9, 6:18, 6:18] = 1.0
    angle = fused + rng.normal(0, 0.3, fused.shape).astype(np.float32)
    angle_path = write_volume(tmp_path / "image_0_nucleus_angle.tif", angle, (1.0, 0.5, 0.5))
    fused_path = write_volume(tmp_path / "image_0_nucleus_fused.tif", fused, (1.0, 0.5, 0.5))
    return (("image_0_nucleus", "nucleus", str(angle_path), str(fused_path), "a"),)


def test_whole_volume_validation_scores_what_the_given_function_predicts(tmp_path, stores):
    calls.clear()
    train_store, val_store = stores
    volumes = VolumeValidation(_volume_pairs(tmp_path), _identity)
    state = start(TrainingJob(_config(tmp_path), str(train_store), str(val_store), volumes=volumes), rank=0)
    assert validate_volumes(state) == pytest.approx(0.0, abs=1e-9)  # the input itself: N_SSIM 0
    assert calls == [("UNet3D", 1, (12, 24, 24), "cpu")]
    assert math.isnan(validate_volumes(_state(tmp_path, stores)))  # no volumes: not scored


def test_the_inference_prediction_given_to_training_pickles_for_ddp_workers(tmp_path):
    predict = partial(predict_whole_volume, tiling=TileSettings(tile_zyx=(8, 16, 16), batch_size=2), amp=False)
    validation = VolumeValidation(_volume_pairs(tmp_path), predict)
    restored = pickle.loads(pickle.dumps(validation))
    assert restored.pairs == validation.pairs and restored.predict.keywords == predict.keywords
