import numpy as np
import pandas as pd
import pytest

from fusemycell.patching.store import write_patch_store


def make_store(directory, count, seed, patch=(8, 16, 16)):
    """A small patch store whose target is a smoothed, brighter copy of the input (something to learn)."""
    rng = np.random.default_rng(seed)
    angles = rng.random((count, *patch)).astype(np.float32)
    targets = 0.5 * angles + 0.5 * np.roll(angles, 1, axis=-1) + 0.1
    index = pd.DataFrame(
        {
            "pair": "image_0_nucleus",
            "origin_z": 0,
            "origin_y": range(count),
            "origin_x": 0,
            "spacing_z_um": 1.0,
            "spacing_y_um": 0.5,
            "spacing_x_um": 0.5,
        }
    )
    write_patch_store(directory, index, patch, "float32", [(i, angles[i], targets[i]) for i in range(count)])
    return directory


@pytest.fixture
def stores(tmp_path):
    return make_store(tmp_path / "train", 6, seed=0), make_store(tmp_path / "val", 3, seed=1)


def train_tiny_model(folder, *, epochs: int, volumes: tuple[int, int], spacing_zyx=(1.0, 0.39, 0.39)):
    """A U-Net of depth 2 and 4 base channels trained on CPU for ``epochs`` on random patch stores of
    ``volumes`` (train, validation) patches under ``folder``: the trained model."""
    from fusemycell.models.card import card_for
    from fusemycell.training.config import TrainingConfig
    from fusemycell.training.engine import train

    config = TrainingConfig(
        device="cpu",
        epochs=epochs,
        batch_size=2,
        checkpoint_dir=str(folder / "checkpoints"),
        model={"depth": 2, "base_channels": 4},
        monitor="val_nssim",  # these stores come without whole volumes
    )
    card = card_for(config.model.model_copy(update={"spacing_zyx": tuple(spacing_zyx)}), (8, 16, 16))
    stores = make_store(folder / "train", volumes[0], seed=0), make_store(folder / "val", volumes[1], seed=1)
    return train(config, *stores, card=card).model


class FakeClock:
    """The training clock of a test: time moves only when the test says (``advance``), so a budget's
    decisions do not depend on the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_steps(monkeypatch):
    """The training clock, advanced by ``clock.step_s`` (1 s) per optimizer step (and by ``clock.costs`` around the
    steps named there: ``validate``, ``validate_volumes``, ``save_checkpoint``); the budget's forward pass
    costs ``clock.forward_s_per_voxel``."""
    from fusemycell.training import budget, engine, steps

    clock = FakeClock()
    clock.costs = {}
    clock.forward_s_per_voxel = 0.0
    monkeypatch.setattr(budget, "CLOCK", clock)
    monkeypatch.setattr(steps, "forward_time_per_voxel", lambda state, batch: clock.forward_s_per_voxel)

    clock.step_s = 1.0

    def costing(module, name):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            result = original(*args, **kwargs)
            clock.advance(clock.step_s if name == "optimizer_step" else clock.costs.get(name, 0.0))
            return result

        monkeypatch.setattr(module, name, timed)

    costing(steps, "optimizer_step")
    costing(steps, "validate")
    costing(steps, "validate_volumes")
    costing(engine, "save_checkpoint")
    return clock
