"""Figures of training: validation slices (input / prediction / target) and learning curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from fusemycell.models.checkpoint import TrainedModel
from fusemycell.patching.store import PatchStore
from fusemycell.patching.torch_dataset import PatchDataset


def validation_figure(
    model: TrainedModel, store: PatchStore, count: int = 4, device: str = "cpu", epoch: int | None = None
) -> Figure:
    """Middle xy slice of ``count`` validation patches: input, prediction, target, on one contrast per row.

    The title names the epoch whose weights predicted (the best one); each row has a colour bar
    (normalised intensity, the patch store's scale).
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
        images = (single_view[z], prediction[z], target[z])
        low, high = np.percentile(target, (1, 99.8))
        for column, (title, image) in enumerate(zip(("input (single view)", "prediction", "target (fused)"), images)):
            axis = axes[row][column]
            shown = axis.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
            axis.set_title(f"{title}, patch {index}", fontsize=9)
            axis.axis("off")
        figure.colorbar(shown, ax=axes[row].tolist(), shrink=0.8, label="normalised intensity")
    figure.suptitle(
        f"validation patches, middle z plane: weights of epoch {epoch}" if epoch is not None else "validation patches"
    )
    return figure


def learning_curves(history: pd.DataFrame) -> Figure:
    """Training and validation loss, and validation N_SSIM, per epoch."""
    figure = Figure(figsize=(10, 3.5), layout="constrained")
    losses, scores = figure.subplots(1, 2)
    losses.plot(history["epoch"], history["train_loss"], label="train")
    losses.plot(history["epoch"], history["val_loss"], label="validation")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend()
    scores.plot(history["epoch"], history["val_nssim"], color="tab:green")
    scores.axhline(0, color="grey", linewidth=0.8)  # identity scores 0
    scores.set_xlabel("epoch")
    scores.set_ylabel("validation N_SSIM")
    return figure
