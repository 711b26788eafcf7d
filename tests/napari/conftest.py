"""The napari plugin's tests run headless: Qt's offscreen platform, and a tiny trained model on disk."""

from __future__ import annotations

import os

# before pytest-qt creates the QApplication: no display is needed (and none is on a CI machine)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from fusemycell.inference.onnx_backend import export_onnx  # noqa: E402
from fusemycell.models.card import card_for  # noqa: E402
from fusemycell.models.checkpoint import save_model  # noqa: E402
from fusemycell.training.config import TrainingConfig  # noqa: E402
from fusemycell.training.engine import train  # noqa: E402
from tests.training.conftest import make_store  # noqa: E402

#: The sample's voxel size; the tiny model is trained at it.
SPACING_ZYX = (1.0, 0.39, 0.39)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A tiny U-Net trained for two epochs, saved as the main job saves it: ``fusemycell_unet.pt`` and ``.onnx``."""
    folder = tmp_path_factory.mktemp("model")
    config = TrainingConfig(
        device="cpu",
        epochs=2,
        batch_size=2,
        checkpoint_dir=str(folder / "checkpoints"),
        model={"depth": 2, "base_channels": 4},
        monitor="val_nssim",  # these stores come without whole volumes
    )
    card = card_for(config.model.model_copy(update={"spacing_zyx": SPACING_ZYX}), (8, 16, 16))
    stores = make_store(folder / "train", 6, seed=0), make_store(folder / "val", 3, seed=1)
    model = train(config, *stores, card=card).model
    path = save_model(model, folder / "fusemycell_unet.pt")
    export_onnx(model, folder / "fusemycell_unet.onnx")
    return path
