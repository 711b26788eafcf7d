"""The evaluation figures answer the question: labelled values, the number of volumes, visible zeros."""

import pandas as pd
from matplotlib.patches import Rectangle

from fusemycell.evaluation.figures import summary_figure


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
    assert {"0.250", "0.100", "0.120", "0.000"} <= texts  # nucleus model mean of 0.2 and 0.3, identity 0
    ticks = [t.get_text() for t in n_ssim_axis.get_xticklabels()]
    assert ticks == ["membrane\n(n = 1 volumes)", "nucleus\n(n = 2 volumes)"]
    assert "N_SSIM" in n_ssim_axis.get_title() and "over the test volumes" in n_ssim_axis.get_ylabel()


def test_the_identity_bar_is_visible_at_zero():
    figure = summary_figure(_metrics())
    bars = [p for p in figure.axes[0].patches if isinstance(p, Rectangle) and p.get_height() == 0]
    assert len(bars) == 2  # identity, one per channel
    assert all(bar.get_linewidth() > 0 and bar.get_edgecolor()[3] > 0 for bar in bars)  # an outline, not nothing
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "model",
        "Gaussian blur",
        "identity (single view)",
    ]
