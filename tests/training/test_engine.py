import math

import pytest
import torch

from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import load_model
from fusemycell.models.unet import UNet3D
from fusemycell.patching.config import AugmentationParams
from fusemycell.training.config import LossWeights, TrainingConfig
from fusemycell.training.engine import BEST_MODEL, LAST_CHECKPOINT, train
from fusemycell.training.losses import image_loss
from fusemycell.training.state import FusionModel
from tests.training.conftest import make_store

TINY_MODEL = {"depth": 2, "base_channels": 4}


def _config(tmp_path, **changes):
    values = {
        "device": "cpu",
        "epochs": 2,
        "batch_size": 2,
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "model": TINY_MODEL,
        "learning_rate": 5e-3,
        "monitor": "val_nssim",  # these stores come without whole volumes
    }
    values.update(changes)
    return TrainingConfig(**values)


def test_training_improves_validation_and_saves_every_epoch(tmp_path, stores):
    epochs = []
    config = _config(tmp_path, epochs=4)
    card = card_for(config.model.model_copy(update={"spacing_zyx": (1.0, 0.5, 0.5)}), (8, 16, 16))
    result = train(config, *stores, epoch_callback=epochs.append, card=card)
    assert [m.epoch for m in epochs] == [1, 2, 3, 4]
    assert epochs[-1].val_loss < epochs[0].val_loss
    assert all(math.isfinite(m.val_nssim) and m.patches_per_s > 0 and m.peak_rss_mb > 0 for m in epochs)
    assert result.best_epoch == max(epochs, key=lambda m: m.val_nssim).epoch
    saved = load_model(tmp_path / "ckpt" / BEST_MODEL)
    assert saved.card.validation.epoch == result.best_epoch
    assert saved.card.model_copy(update={"validation": None, "training": None}) == card
    summary = result.model.card.training  # how the budget was spent travels with the model
    assert summary.epochs == 4 and summary.optimizer_steps == sum(m.optimizer_steps for m in epochs) > 0
    assert summary.steps_per_minute > 0 and 0 < summary.validation_share < 1
    assert (tmp_path / "ckpt" / LAST_CHECKPOINT).exists()
    assert result.model.config.spacing_zyx == (1.0, 0.5, 0.5)


def test_accumulating_k_batches_equals_one_batch_of_k_times_b():
    """The engine divides each micro-batch's loss by its group size: gradients equal those of one big batch."""
    torch.manual_seed(0)
    model = FusionModel(UNet3D(UNetConfig(depth=2, base_channels=4, residual=False)))
    inputs, targets = torch.rand(4, 1, 8, 16, 16), torch.rand(4, 1, 8, 16, 16)
    weights = LossWeights(l1=1, mse=0.5, ssim=0.2)

    model.zero_grad()
    image_loss(model(inputs)[0], targets, weights).backward()
    whole = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    for part in (slice(0, 2), slice(2, 4)):
        (image_loss(model(inputs[part])[0], targets[part], weights) / 2).backward()
    accumulated = [p.grad for p in model.parameters()]
    for a, b in zip(whole, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_engine_accumulation_makes_the_same_step_as_a_larger_batch(tmp_path):
    train_store = make_store(tmp_path / "t", 4, seed=0)
    val_store = make_store(tmp_path / "v", 2, seed=1)
    # equivalence holds for per-sample normalisation; batch normalisation sees different batches by design
    model = {**TINY_MODEL, "residual": False, "normalization": "instance"}
    common = {"epochs": 1, "grad_clip": None, "warmup_fraction": 0.0, "model": model, "amp": False}  # float32 sums
    one_batch = train(_config(tmp_path / "a", batch_size=4, accumulation_steps=1, **common), train_store, val_store)
    accumulated = train(_config(tmp_path / "b", batch_size=2, accumulation_steps=2, **common), train_store, val_store)
    # AdamW steps every weight by about the learning rate: a missed or extra optimizer step moves weights by
    # that much, while float rounding (which differs between CPUs and memory layouts) moves them by far less
    step = _config(tmp_path / "c", **common).learning_rate
    for (name, a), (_, b) in zip(
        one_batch.model.network.state_dict().items(), accumulated.model.network.state_dict().items()
    ):
        assert float((a - b).abs().max()) < 0.05 * step, name


def _assert_same_weights(model, other):
    for (name, a), (_, b) in zip(model.network.state_dict().items(), other.network.state_dict().items()):
        assert torch.equal(a, b), name


class Killed(RuntimeError):
    pass


def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, stores):
    augmentation = AugmentationParams()
    straight = train(_config(tmp_path / "straight", epochs=3), *stores, augmentation=augmentation)

    def kill_after_first(metrics):
        if metrics.epoch == 1:
            raise Killed("SIGKILL stand-in, after the epoch's checkpoint")

    interrupted = _config(tmp_path / "resumed", epochs=3)
    with pytest.raises(Killed):
        train(interrupted, *stores, augmentation=augmentation, epoch_callback=kill_after_first)
    resumed = train(interrupted.model_copy(update={"resume": True}), *stores, augmentation=augmentation)
    assert [m.epoch for m in resumed.history] == [1, 2, 3]
    _assert_same_weights(resumed.model, straight.model)
    assert resumed.best_epoch == straight.best_epoch


def test_resume_refuses_a_checkpoint_of_another_architecture(tmp_path, stores):
    train(_config(tmp_path, epochs=1), *stores)
    other = _config(tmp_path, epochs=2, resume=True, model={"depth": 2, "base_channels": 6})
    with pytest.raises(ValueError, match="different model configuration"):
        train(other, *stores)


def test_physics_informed_training_fits_and_reports_the_forward_model(tmp_path, stores):
    config = _config(tmp_path, epochs=1, physics={"enabled": True, "fit_steps": 5, "weight": 0.1})
    result = train(config, *stores)
    assert set(result.physics) == {
        "illumination_attenuation_um",
        "detection_attenuation_um",
        "blur_growth_per_um",
        "gain",
        "offset",
    }
    assert math.isfinite(result.history[0].train_consistency)
    assert result.model.card.physics == result.physics


def test_early_stopping(tmp_path, stores):
    # a zero learning rate never improves: patience 1 stops after the second epoch
    config = _config(tmp_path, epochs=5, learning_rate=1e-12, early_stopping_patience=1, monitor="val_loss")
    result = train(config, *stores)
    assert result.stopped_early and len(result.history) == 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path, stores):
    """gloo, 2 processes: both train, the weights stay identical, rank 0 alone writes."""
    result = train(_config(tmp_path, devices=2, epochs=2), *stores)
    # the replicas are checked identical by the engine itself (it raises when they diverge); rank 0 alone
    # wrote: one checkpoint and one best model, of the last and the best epoch, and the spawn result
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [BEST_MODEL, LAST_CHECKPOINT, "result.pt"]
    assert torch.load(tmp_path / "ckpt" / LAST_CHECKPOINT, weights_only=True)["epoch"] == 2
    assert [m.epoch for m in result.history] == [1, 2]
    assert load_model(tmp_path / "ckpt" / BEST_MODEL).config == result.model.config


def test_resuming_past_the_asked_epochs_warns_that_nothing_is_left_to_train(tmp_path, stores, caplog):
    train(_config(tmp_path, epochs=2), *stores)
    with caplog.at_level("WARNING", logger="fusemycell.training"):
        result = train(_config(tmp_path, epochs=1, resume=True), *stores)
    assert "already holds epoch 2 of the 1 asked for: nothing left to train" in caplog.text
    assert [m.epoch for m in result.history] == [1, 2]  # the checkpoint's history, nothing new


def test_the_budget_is_spent_on_whole_epochs_and_a_shortened_last_one():
    from fusemycell.training.schedule import steps_that_fit

    # 100 s left, 1 s a step, 5 s per epoch of validation, 30 steps an epoch: 3 whole epochs (105 s)
    # would not fit; 2 whole ones and 25 steps of a third (3 x 5 s + 85 steps) do
    assert steps_that_fit(100, 1.0, 5.0, 30, max_epochs=10) == (85, 3)
    assert steps_that_fit(100, 1.0, 5.0, 30, max_epochs=2) == (60, 2)  # never past the epochs asked for
    # a last epoch of under a quarter of an epoch is not worth its validation
    assert steps_that_fit(70, 1.0, 5.0, 30, max_epochs=10) == (60, 2)
    assert steps_that_fit(3, 1.0, 5.0, 30, max_epochs=10) == (0, 0)  # nothing fits: stop


def test_patches_per_epoch_fixes_the_work_whatever_the_stores_size(tmp_path, monkeypatch):
    from fusemycell.patching.torch_dataset import PatchDataset

    calls = []
    original = PatchDataset.__getitem__
    monkeypatch.setattr(PatchDataset, "__getitem__", lambda self, index: calls.append(index) or original(self, index))
    val = make_store(tmp_path / "v", 2, seed=1)
    drawn = {}
    for count in (4, 24):
        calls.clear()
        train(
            _config(tmp_path / str(count), epochs=1, patches_per_epoch=6),
            make_store(tmp_path / f"s{count}", count, 0),
            val,
        )
        drawn[count] = len(calls) - 2  # minus the two validation patches
    assert drawn == {4: 6, 24: 6}  # six each, not one pass over 4 and 24


def test_the_schedule_is_replanned_on_the_epochs_that_fit():
    from fusemycell.training.schedule import CosineSchedule

    schedule = CosineSchedule(100, 0.0, 0.0)
    assert schedule(99) == pytest.approx(0.0, abs=1e-3)
    schedule.plan(200)
    assert schedule(99) == pytest.approx(0.5, abs=0.02) and schedule(199) == pytest.approx(0.0, abs=1e-3)
