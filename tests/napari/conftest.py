"""The napari plugin's tests run headless: Qt's offscreen platform, and a tiny trained model on disk."""

from __future__ import annotations

import os

# before pytest-qt creates the QApplication: no display is needed (and none is on a CI machine)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402

from fusemycell.inference.onnx_backend import export_onnx  # noqa: E402
from fusemycell.models.model_file import save_model  # noqa: E402
from tests.training.conftest import train_tiny_model  # noqa: E402

#: The sample's voxel size; the tiny model is trained at it.
SPACING_ZYX = (1.0, 0.39, 0.39)


@pytest.fixture(scope="session", autouse=True)
def _never_the_users_napari_settings(tmp_path_factory):
    """Before any fixture of a wider scope uses the plugin (its first use writes napari's settings): a throw-away
    settings object for the whole session, saved in a folder of its own."""
    from napari import settings
    from napari.settings import NapariSettings

    path = tmp_path_factory.mktemp("napari_settings") / "settings.yaml"
    saved, saved_variable = settings._SETTINGS, os.environ.get("NAPARI_CONFIG")
    settings._SETTINGS = NapariSettings(config_path=path)
    os.environ["NAPARI_CONFIG"] = str(path)
    yield
    settings._SETTINGS = saved
    if saved_variable is None:
        os.environ.pop("NAPARI_CONFIG", None)
    else:
        os.environ["NAPARI_CONFIG"] = saved_variable


@pytest.fixture(autouse=True)
def napari_settings(tmp_path, monkeypatch):
    """napari's settings during a test: a throw-away object saved to a file of the test's own, never the user's
    (the plugin's first use writes a reader preference); processes the test starts use the same file
    (``NAPARI_CONFIG``). The plugin's first use is yet to come."""
    from napari import settings
    from napari.settings import NapariSettings

    from fusemycell.napari.preferences import forget_first_use

    path = tmp_path / "napari_settings.yaml"
    throw_away = NapariSettings(config_path=path)
    monkeypatch.setattr(settings, "_SETTINGS", throw_away)
    monkeypatch.setenv("NAPARI_CONFIG", str(path))
    forget_first_use()
    yield throw_away
    forget_first_use()


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A tiny U-Net trained for two epochs, saved as the main job saves it: ``fusemycell_unet.pt`` and ``.onnx``."""
    folder = tmp_path_factory.mktemp("model")
    model = train_tiny_model(folder, epochs=2, volumes=(6, 3), spacing_zyx=SPACING_ZYX)
    path = save_model(model, folder / "fusemycell_unet.pt")
    export_onnx(model, folder / "fusemycell_unet.onnx")
    return path


@pytest.fixture(scope="session")
def narrow_model_file(model_file, tmp_path_factory):
    """The tiny model whose card says it was trained on 1 um planes only (the sample's 3 um layer is outside)."""
    from fusemycell.models.domain import TrainingDomain, ValueRange
    from fusemycell.models.model_file import TrainedModel, load_model

    model = load_model(model_file)
    pixel, size = ValueRange(low=0.39, high=0.39), ValueRange(low=12, high=40)
    domain = TrainingDomain(
        volumes=1, spacing_zyx_um=(ValueRange(low=1.0, high=1.0), pixel, pixel), shape_zyx=(size,) * 3
    )
    narrow = TrainedModel(model.network, model.card.model_copy(update={"training_domain": domain}))
    return save_model(narrow, tmp_path_factory.mktemp("narrow") / "fusemycell_unet.pt")
