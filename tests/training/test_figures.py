"""The validation slices name the epoch that predicted them and carry a colour bar."""

from fusemycell.models.checkpoint import TrainedModel
from fusemycell.models.config import UNetConfig
from fusemycell.models.unet import UNet3D
from fusemycell.patching.store import PatchStore
from fusemycell.training.figures import validation_figure


def test_validation_slices_have_a_colour_bar_per_row_and_name_their_epoch(stores):
    _, val = stores
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), config)
    figure = validation_figure(model, PatchStore(val), count=2, epoch=7)
    assert "epoch 7" in figure.get_suptitle()
    colour_bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(colour_bars) == 2
    assert colour_bars[0].get_ylabel() == "normalised intensity"
