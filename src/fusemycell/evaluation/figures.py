"""Evaluation figures: orthogonal slices per test volume, and model versus baselines per channel."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fusemycell.metrics.ssim import ImageStatistics


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
    """
    slices = {
        name: [statistics[name].normalize(s) for s in orthogonal_slices(volume)] for name, volume in images.items()
    }
    slices["error (prediction - ground truth)"] = [p - g for p, g in zip(slices["prediction"], slices["ground truth"])]
    aspects = (spacing_zyx[1] / spacing_zyx[2], spacing_zyx[0] / spacing_zyx[2], spacing_zyx[0] / spacing_zyx[1])
    figure = Figure(figsize=(12, 2.8 * len(slices)), layout="constrained")
    axes = figure.subplots(len(slices), 3, squeeze=False)
    for row, (name, views) in enumerate(slices.items()):
        error = name.startswith("error")
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
        figure.colorbar(image, ax=axes[row].tolist(), shrink=0.8)
    figure.suptitle(title)
    return figure


#: Methods in the order they are drawn, with the names a reader knows them by.
METHOD_LABELS = {"model": "model", "gaussian_blur": "Gaussian blur", "identity": "identity (single view)"}


def summary_figure(summary: pd.DataFrame) -> Figure:
    """Mean N_SSIM and N_IoU per channel: the model against the blur and identity baselines.

    Every bar is labelled with its value and its x tick says how many test volumes it averages
    (``n``); identity scores 0 by definition, so its bars are drawn as an outline at 0 with "0"
    written on them rather than as nothing.
    """
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2)
    channels = sorted(summary["channel"].unique())
    methods = [m for m in METHOD_LABELS if m in set(summary["method"])]
    width = 0.8 / max(1, len(methods))
    for axis, metric in zip(axes, ("n_ssim", "n_iou")):
        for index, method in enumerate(methods):
            rows = [summary.loc[(summary.channel == c) & (summary.method == method), metric].dropna() for c in channels]
            values = [float(r.mean()) if len(r) else float("nan") for r in rows]
            positions = np.arange(len(channels)) + (index - (len(methods) - 1) / 2) * width
            bars = axis.bar(
                positions, values, width, label=METHOD_LABELS[method], edgecolor="black", linewidth=0.8, zorder=2
            )
            axis.bar_label(bars, labels=[f"{v:.3f}" if np.isfinite(v) else "n/a" for v in values], fontsize=8)
        counts = [summary.loc[summary.channel == c, "pair"].nunique() if "pair" in summary else 0 for c in channels]
        axis.axhline(0, color="grey", linewidth=0.8, zorder=1)
        axis.set_xticks(np.arange(len(channels)), [f"{c}\n(n = {n} volumes)" for c, n in zip(channels, counts)])
        name = metric.upper().replace("N_", "N_")
        axis.set_ylabel(f"mean {name} over the test volumes")
        axis.set_title(f"{name} (0 = the single view, 1 = perfect fusion)", fontsize=10)
        axis.margins(y=0.15)
        axis.legend(fontsize=8)
    return figure
