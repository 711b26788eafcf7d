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


def summary_figure(summary: pd.DataFrame) -> Figure:
    """Mean N_SSIM and N_IoU per channel: the model against the identity and blur baselines."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.subplots(1, 2)
    channels = sorted(summary["channel"].unique())
    methods = ["model", "identity", "gaussian_blur"]
    width = 0.8 / len(methods)
    for axis, metric in zip(axes, ("n_ssim", "n_iou")):
        for index, method in enumerate(methods):
            values = [
                float(summary.loc[(summary.channel == c) & (summary.method == method), metric].mean()) for c in channels
            ]
            positions = np.arange(len(channels)) + (index - (len(methods) - 1) / 2) * width
            axis.bar(positions, values, width, label=method)
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xticks(np.arange(len(channels)), channels)
        axis.set_ylabel(f"mean {metric.upper().replace('N_', 'N_')}")
        axis.set_title(metric.replace("n_", "N_").upper().replace("N_SSIM", "N_SSIM"))
        axis.legend(fontsize=8)
    return figure
