"""The validation slices name the epoch that predicted them and carry colour and scale bars; the learning
curves have whole-number epochs and mark the kept epoch."""

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel
from fusemycell.models.unet import UNet3D
from fusemycell.patching.store import PatchStore
from fusemycell.plotting import SCALE_BAR_GID
from fusemycell.training.figures import kept_epoch, learning_curves, validation_figure


def test_validation_slices_have_a_colour_bar_per_row_and_name_their_epoch(stores):
    _, val = stores
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), config)
    figure = validation_figure(model, PatchStore(val), count=2, epoch=7)
    assert "epoch 7" in figure.get_suptitle()
    colour_bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(colour_bars) == 2
    assert colour_bars[0].get_ylabel() == "normalised intensity"
    slices = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    bars = [a for axis in slices for a in axis.artists if a.get_gid() == SCALE_BAR_GID]
    assert len(bars) == len(slices) == 6
    # 16 pixels of 0.5 um across each patch: a 2 um bar is 4 pixels long
    assert {b.txt_label.get_text() for b in bars} == {"2 µm"}
    assert {b.size_bar.get_children()[0].get_width() for b in bars} == {4.0}


def _history(epochs=7, kept=3):
    return pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "train_loss": [1 / e for e in range(1, epochs + 1)],
            "val_loss": [1 / e + 0.01 * e for e in range(1, epochs + 1)],
            "val_nssim": [0.1 - 0.01 * abs(e - kept) for e in range(1, epochs + 1)],
            "val_volume_nssim": [0.15 - 0.01 * abs(e - kept) for e in range(1, epochs + 1)],
            "kept": [e == kept for e in range(1, epochs + 1)],
        }
    )


def test_learning_curves_have_whole_epochs_and_mark_the_kept_epoch():
    figure = learning_curves(_history())
    FigureCanvasAgg(figure).draw()  # ticks are chosen when drawn
    assert kept_epoch(_history()) == 3
    for axis in figure.axes:
        ticks = [t for t in axis.get_xticks() if 1 <= t <= 7]
        assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks)
        (marker,) = [line for line in axis.get_lines() if line.get_label() == "kept: epoch 3"]
        assert set(marker.get_xdata()) == {3}  # a vertical line at the kept epoch
        assert "kept: epoch 3" in [t.get_text() for t in axis.get_legend().get_texts()]
    assert "whole volumes" in [line.get_label() for line in figure.axes[1].get_lines()]


def test_a_single_epoch_gets_one_whole_tick():
    figure = learning_curves(_history(epochs=1, kept=1))  # a short budget keeps the first and only epoch
    FigureCanvasAgg(figure).draw()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        assert [t for t in axis.get_xticks() if low <= t <= high] == [1.0]


def test_a_history_without_the_kept_column_is_drawn_without_the_mark():
    history = _history().drop(columns=["kept", "val_volume_nssim"])
    figure = learning_curves(history)
    assert kept_epoch(history) is None
    assert not [line for axis in figure.axes for line in axis.get_lines() if line.get_label().startswith("kept")]
    assert [line.get_label() for line in figure.axes[1].get_lines()][:1] == ["patches"]
    marked = learning_curves(history, kept=5)
    assert [line.get_label() for line in marked.axes[0].get_lines()][-1] == "kept: epoch 5"


def test_one_epoch_is_readable_a_labelled_point_in_the_middle_of_the_axis():
    figure = learning_curves(_history(epochs=1, kept=1))
    FigureCanvasAgg(figure).draw()
    losses = figure.axes[0]
    assert losses.get_xlim() == (0.5, 1.5)
    (train,) = [line for line in losses.get_lines() if line.get_label() == "train"]
    assert train.get_marker() == "o" and train.get_markersize() >= 5
    assert "1" in [text.get_text() for text in losses.texts]  # the train loss of epoch 1, 1/1, written by the point


def test_epochs_without_validation_are_skipped_not_drawn_as_gaps():
    history = _history(epochs=6, kept=6)
    history.loc[history["epoch"].isin([1, 2, 4]), "val_volume_nssim"] = float("nan")  # validated every other epoch
    figure = learning_curves(history)
    (volumes,) = [line for line in figure.axes[1].get_lines() if line.get_label() == "whole volumes"]
    assert list(volumes.get_xdata()) == [3, 5, 6]  # one line through the measured epochs
    assert not figure.axes[0].texts  # six epochs: no value labels
