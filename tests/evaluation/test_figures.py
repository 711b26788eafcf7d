"""The evaluation figures answer the question without help: labelled values, the number of volumes,
identity as the reference line at 0, N_IoU explained, scale bars in micrometres, labelled colour bars."""

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from fusemycell.evaluation.figures import ERROR_ROW, IDENTITY_LABEL, N_IOU_CAPTION, summary_figure, volume_figure
from fusemycell.metrics.ssim import image_statistics
from fusemycell.plotting import SCALE_BAR_GID


def _metrics() -> pd.DataFrame:
    rows = []
    for pair, channel, model in (("image_0_nucleus", "nucleus", 0.2), ("image_2_nucleus", "nucleus", 0.3)) + (
        ("image_1_membrane", "membrane", 0.1),
    ):
        for method, n_ssim in (("model", model), ("identity", 0.0), ("gaussian_blur", 0.12)):
            rows.append({"pair": pair, "channel": channel, "method": method, "n_ssim": n_ssim, "n_iou": n_ssim / 2})
    return pd.DataFrame(rows)


def test_every_bar_is_labelled_and_each_channel_says_how_many_volumes_it_averages():
    figure = summary_figure(_metrics())
    n_ssim_axis = figure.axes[0]
    texts = {t.get_text() for t in n_ssim_axis.texts}
    assert {"0.250", "0.100", "0.120"} <= texts  # nucleus model mean of 0.2 and 0.3
    ticks = [t.get_text() for t in n_ssim_axis.get_xticklabels()]
    assert ticks == ["membrane\n(1 volume)", "nucleus\n(2 volumes)"]
    assert "N_SSIM" in n_ssim_axis.get_title() and "over the test volumes" in n_ssim_axis.get_ylabel()


def test_identity_is_the_reference_line_at_zero_not_a_bar():
    figure = summary_figure(_metrics())
    for axis in figure.axes:
        heights = [bar.get_height() for bar in axis.patches]
        assert len(heights) == 4 and 0.0 not in heights  # model and blur, two channels; no identity bar
        (line,) = [line for line in axis.get_lines() if line.get_label() == IDENTITY_LABEL]
        assert isinstance(line, Line2D) and set(line.get_ydata()) == {0} and line.get_linestyle() == "--"
        assert [t.get_text() for t in axis.get_legend().get_texts()] == [IDENTITY_LABEL, "model", "Gaussian blur"]


def test_n_iou_is_explained_in_the_figure_or_left_out():
    figure = summary_figure(_metrics())
    n_iou_axis = figure.axes[1]
    assert n_iou_axis.get_title().startswith("N_IoU: overlap of segmented nuclei / cells with the fused view's")
    assert n_iou_axis.get_ylabel() == "mean N_IoU over the test volumes"
    assert figure.get_supxlabel() == N_IOU_CAPTION and "Otsu" in N_IOU_CAPTION and "(1 - IoU" in N_IOU_CAPTION
    without = summary_figure(_metrics().assign(n_iou=float("nan")))  # segmentation not scored
    assert len(without.axes) == 1 and "N_SSIM" in without.axes[0].get_title() and not without.get_supxlabel()


def test_every_slice_has_a_scale_bar_in_micrometres_and_every_colour_bar_a_label():
    rng = np.random.default_rng(0)
    images = {name: rng.integers(100, 3000, (10, 52, 64)).astype(np.uint16) for name in ("input", "prediction")}
    images["ground truth"] = images["prediction"] // 2 + 50
    statistics = {name: image_statistics(volume) for name, volume in images.items()}
    spacing = (2.0, 0.39, 0.5)
    figure = volume_figure("image_0_nucleus", images, statistics, spacing)
    slices = [axis for axis in figure.axes if axis.get_label() != "<colorbar>"]
    colour_bars = [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]
    assert len(slices) == 12 and len(colour_bars) == 4
    for axis in slices:
        (bar,) = [artist for artist in axis.artists if artist.get_gid() == SCALE_BAR_GID]
        label = bar.txt_label.get_text()
        assert label.endswith(" µm")
        # the bar's length in pixels times the voxel size across the slice is the length it says
        across = spacing[1] if axis.get_title().endswith("yz") else spacing[2]
        length_px = bar.size_bar.get_children()[0].get_width()
        assert abs(length_px * across - float(label.split()[0])) < 1e-6
    assert all(colour_bar.get_ylabel() for colour_bar in colour_bars)
    assert colour_bars[-1].get_ylabel().startswith("prediction − ground truth") and ERROR_ROW.startswith("error")
    assert "p2 → 0, p99.8 → 1" in colour_bars[0].get_ylabel()
