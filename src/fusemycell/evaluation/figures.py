"""Evaluation figures: orthogonal slices per test volume, and model versus baselines per channel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fusemycell.metrics.ssim import ImageStatistics
from fusemycell.plotting import add_scale_bar, plural

#: The last row of the volume figure.
ERROR_ROW = "error (prediction - ground truth)"
#: The reference line of the summary figure.
IDENTITY_LABEL = "identity (single view) = 0 by definition"


def orthogonal_slices(volume: Any) -> list[np.ndarray]:
    """The central xy, xz and yz slices of an array-like (reads only those)."""
    depth, height, width = volume.shape
    return [
        np.asarray(volume[depth // 2], dtype=np.float32),
        np.asarray(volume[:, height // 2, :], dtype=np.float32),
        np.asarray(volume[:, :, width // 2], dtype=np.float32),
    ]


def volume_figure(
    title: str,
    images: dict[str, Any],
    statistics: dict[str, ImageStatistics],
    spacing_zyx: tuple[float, float, float],
) -> Figure:
    """Rows input / prediction / ground truth / error; columns xy, xz, yz; one contrast for all.

    Each image is shown on the challenge's scale (its own percentiles 2 and 99.8 -> 0 and 1),
    which is what the metric compares; the error is prediction minus ground truth on that scale.
    Every panel has a scale bar in micrometres (slices keep their physical aspect ratio) and every
    row a labelled colour bar.
    """
    slices = {
        name: [statistics[name].normalize(s) for s in orthogonal_slices(volume)] for name, volume in images.items()
    }
    slices[ERROR_ROW] = [p - g for p, g in zip(slices["prediction"], slices["ground truth"])]
    aspects = (spacing_zyx[1] / spacing_zyx[2], spacing_zyx[0] / spacing_zyx[2], spacing_zyx[0] / spacing_zyx[1])
    column_spacings = (spacing_zyx[2], spacing_zyx[2], spacing_zyx[1])  # xy and xz: x across; yz: y across
    figure = Figure(figsize=(12, 2.8 * len(slices)), layout="constrained")
    axes = figure.subplots(len(slices), 3, squeeze=False)
    for row, (name, views) in enumerate(slices.items()):
        error = name == ERROR_ROW
        for column, (view, label, aspect) in enumerate(zip(views, ("xy", "xz", "yz"), aspects)):
            axis = axes[row][column]
            image = axis.imshow(
                view,
                cmap="RdBu_r" if error else "gray",
                vmin=-0.5 if error else 0.0,
                vmax=0.5 if error else 1.0,
                aspect=aspect,
                interpolation="nearest",
            )
            axis.set_title(f"{name}: {label}", fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
            add_scale_bar(axis, column_spacings[column], view.shape[1], color="black" if error else "white")
        label = "prediction − ground truth\n(normalised)" if error else "intensity, normalised\n(p2 → 0, p99.8 → 1)"
        figure.colorbar(image, ax=axes[row].tolist(), shrink=0.8, label=label)
    figure.suptitle(title)
    return figure


#: Methods in the order they are drawn, with the names a reader knows them by.
METHOD_LABELS = {"model": "model", "gaussian_blur": "Gaussian blur", "identity": "identity (single view)"}
METRIC_NAMES = {"n_ssim": "N_SSIM", "n_iou": "N_IoU"}
#: What each score measures, in the words of the figure's panel titles.
METRIC_TITLES = {
    "n_ssim": "N_SSIM: structural similarity to the fused view",
    "n_iou": "N_IoU: overlap of segmented nuclei / cells with the fused view's",
}
#: How N_IoU is computed, as the figure's caption says it.
N_IOU_CAPTION = (
    "N_IoU: IoU of the foreground masks (nuclei above Otsu's threshold; cells inside the specimen and between "
    "membranes) with the fused view's, normalised like N_SSIM: (IoU - IoU of the single view) / "
    "(1 - IoU of the single view). An offline approximation of the challenge's Cellpose-based score."
)


def summary_figure(summary: pd.DataFrame) -> Figure:
    """Mean N_SSIM (and N_IoU, when scored) per channel: the model and the blur baseline against the single view.

    Every bar is labelled with its value and its x tick says how many test volumes it averages.
    Identity (the single view itself) scores 0 by definition: it is the dashed reference line at 0,
    not a bar. The N_IoU panel's title and the caption say what N_IoU measures; a summary without
    N_IoU values (segmentation not scored) gets the N_SSIM panel alone.
    """
    metrics = ["n_ssim"] + (["n_iou"] if "n_iou" in summary and summary["n_iou"].notna().any() else [])
    figure = Figure(figsize=(5.5 * len(metrics) + 0.5, 4.6), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    channels = sorted(summary["channel"].unique())
    methods = [m for m in METHOD_LABELS if m != "identity" and m in set(summary["method"])]
    width = 0.8 / max(1, len(methods))
    for axis, metric in zip(axes, metrics):
        for index, method in enumerate(methods):
            rows = [summary.loc[(summary.channel == c) & (summary.method == method), metric].dropna() for c in channels]
            values = [float(r.mean()) if len(r) else float("nan") for r in rows]
            positions = np.arange(len(channels)) + (index - (len(methods) - 1) / 2) * width
            bars = axis.bar(
                positions, values, width, label=METHOD_LABELS[method], edgecolor="black", linewidth=0.8, zorder=2
            )
            axis.bar_label(bars, labels=[f"{v:.3f}" if np.isfinite(v) else "n/a" for v in values], fontsize=8)
        axis.axhline(0, color="black", linestyle="--", linewidth=1.2, zorder=3, label=IDENTITY_LABEL)
        counts = [summary.loc[summary.channel == c, "pair"].nunique() if "pair" in summary else 0 for c in channels]
        axis.set_xticks(np.arange(len(channels)), [f"{c}\n({plural(n, 'volume')})" for c, n in zip(channels, counts)])
        name = METRIC_NAMES[metric]
        axis.set_ylabel(f"mean {name} over the test volumes")
        axis.set_title(f"{METRIC_TITLES[metric]}\n(0 = the single view, 1 = perfect fusion)", fontsize=10)
        axis.margins(y=0.15)
        axis.legend(fontsize=8)
    if "n_iou" in metrics:
        figure.supxlabel(N_IOU_CAPTION, fontsize=7.5, wrap=True)
    return figure
