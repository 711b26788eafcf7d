"""Inference nodes: an empty input folder is an error, not a silent success."""

import pytest

from fusemycell.inference.settings import InferenceSettings
from fusemycell.models.card import card_for
from fusemycell.models.checkpoint import TrainedModel
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D
from fusemycell.pipelines.inference.nodes import plan_predictions


def test_an_empty_input_folder_is_an_error_naming_it(tmp_path):
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), card_for(config))
    params = InferenceSettings(device="cpu", input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
    message = r"no \.tif/\.tiff file or \.ome\.zarr image in the inference input folder .*in; sub-folders"
    with pytest.raises(ValueError, match=message):
        plan_predictions({}, model, params, str(tmp_path / "raw"))
