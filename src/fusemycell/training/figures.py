"""Figures of training: validation slices (input / prediction / target) and learning curves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fusemycell.models.model_file import TrainedModel
from fusemycell.patching.store import PatchStore
from fusemycell.patching.torch_dataset import PatchDataset
from fusemycell.plotting import add_scale_bar, integer_ticks


def validation_figure(
    model: TrainedModel, store: PatchStore, count: int = 4, device: str = "cpu", epoch: int | None = None
) -> Figure:
    """Middle xy slice of ``count`` validation patches: input, prediction, target, on one contrast per row.

    The title names the epoch whose weights predicted (the best one); each row has a colour bar
    (normalised intensity, the patch store's scale) and each slice a scale bar in micrometres
    (when the store's index has the voxel size).
    """
    count = min(count, len(store))
    rows = np.linspace(0, len(store) - 1, count).astype(int) if count else []
    figure = Figure(figsize=(10, 3 * max(1, count)), layout="constrained")
    axes = figure.subplots(max(1, count), 3, squeeze=False)
    network = model.network.to(device).eval()
    patches = PatchDataset(store)  # the network input: the single view and the position channels
    for row, index in enumerate(rows):
        network_input, target_tensor = patches[int(index)][:2]
        single_view, target = network_input[0].numpy(), target_tensor[0].numpy()
        with torch.no_grad():
            prediction = network(network_input[None].to(device))[0, 0].cpu().numpy()
        z = single_view.shape[0] // 2
        spacing_x = _patch_spacing_x(store, int(index))
        images = (single_view[z], prediction[z], target[z])
        low, high = np.percentile(target, (1, 99.8))
        for column, (title, image) in enumerate(zip(("input (single view)", "prediction", "target (fused)"), images)):
            axis = axes[row][column]
            shown = axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
            axis.set_title(f"{title}, patch {index}", fontsize=9)
            axis.axis("off")
            if spacing_x is not None:
                add_scale_bar(axis, spacing_x, image.shape[1])
        figure.colorbar(shown, ax=axes[row].tolist(), shrink=0.8, label="normalised intensity")
    figure.suptitle(
        f"validation patches, middle z plane: weights of epoch {epoch}" if epoch is not None else "validation patches"
    )
    return figure


def _patch_spacing_x(store: PatchStore, index: int) -> float | None:
    """The x voxel size (um) of patch ``index``, from the store's index; None when it has none."""
    if "spacing_x_um" not in store.index.columns:
        return None
    return float(store.index["spacing_x_um"].iloc[index])


def kept_epoch(history: pd.DataFrame) -> int | None:
    """The epoch whose weights were kept (the row whose ``kept`` column is true), or None when none is marked."""
    if "kept" not in history:
        return None
    kept = history.loc[history["kept"].astype(bool), "epoch"]
    return int(kept.iloc[0]) if len(kept) else None


def learning_curves(history: pd.DataFrame, kept: int | None = None) -> Figure:
    """Training and validation loss, and validation N_SSIM, per epoch (whole-number ticks).

    The kept epoch (``kept``, else :func:`kept_epoch` of the history) is a dotted vertical line on
    both panels, named in the legend. The N_SSIM panel shows the whole validation volumes' score
    (what chooses the epoch, when measured) and the validation patches'.
    """
    kept = kept if kept is not None else kept_epoch(history)
    figure = Figure(figsize=(10, 3.5), layout="constrained")
    losses, scores = figure.subplots(1, 2)
    few = len(history) <= 3  # a short budget: one to three epochs, each point labelled with its value
    _curve(losses, history, "train_loss", "train", None, few)
    _curve(losses, history, "val_loss", "validation", None, few)
    losses.set_ylabel("loss")
    if "val_volume_nssim" in history and history["val_volume_nssim"].notna().any():
        _curve(scores, history, "val_volume_nssim", "whole volumes", "tab:green", few)
    _curve(scores, history, "val_nssim", "patches", "tab:olive", few)
    scores.axhline(0, color="grey", linewidth=0.8)  # identity scores 0
    scores.set_ylabel("validation N_SSIM (0 = single view)")
    first, last = int(history["epoch"].min()), int(history["epoch"].max())
    for axis in (losses, scores):
        if kept is not None:
            axis.axvline(kept, color="tab:red", linestyle=":", linewidth=1.5, label=f"kept: epoch {kept}")
        axis.set_xlabel("epoch")
        axis.set_xlim(first - 0.5, last + 0.5)  # a single epoch sits in the middle, not on an edge
        integer_ticks(axis, first, last)
        axis.legend(fontsize=8)
    return figure


def _curve(axis: Any, history: pd.DataFrame, column: str, label: str, colour: str | None, annotate: bool) -> None:
    """One series against the epochs that have it (epochs without a value, e.g. not validated, are skipped,
    so the line joins the measured ones instead of breaking into lone dots)."""
    measured = history[["epoch", column]].dropna()
    (line,) = axis.plot(measured["epoch"], measured[column], marker="o", markersize=5, label=label, color=colour)
    if annotate:
        for epoch, value in zip(measured["epoch"], measured[column]):
            axis.annotate(
                f"{value:.3g}",
                (epoch, value),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=7,
                color=line.get_color(),
            )
