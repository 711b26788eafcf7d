"""Fingerprint figures: orthogonal maximum projections of angle and fused, and intensity profiles."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fusemycell.plotting import add_scale_bar
from fusemycell.preprocessing.fingerprint import VolumeScan


def _contrast(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, (1, 99.8))
    return float(low), float(high if high > low else low + 1)


def fingerprint_figure(angle: VolumeScan | None, fused: VolumeScan | None, title: str) -> Figure:
    """Maximum projections (xy, xz, yz) of angle next to fused, and their z and x (illumination) profiles.

    Projections keep the physical aspect ratio and carry a scale bar in micrometres; profiles are
    drawn against micrometres. "angle" is the challenge's name for the single view (one
    illumination and detection angle), the network's input; "fused" is the multi-view fusion it
    learns to predict.
    """
    labelled = (("angle (single view)", angle), ("fused (target)", fused))
    scans = [(label, scan) for label, scan in labelled if scan and scan.error is None]
    figure = Figure(figsize=(12, 3.2 * max(1, len(scans)) + 2.6), layout="constrained")
    grid = figure.add_gridspec(len(scans) + 1, 4, height_ratios=[3] * len(scans) + [2])
    for row, (label, scan) in enumerate(scans):
        _projections(figure, grid, row, label, scan)
        _description(figure.add_subplot(grid[row, 3]), label, scan)
    for column, (axis_index, axis_label) in enumerate(((0, "z (detection axis)"), (2, "x (illumination axis)"))):
        _profiles(figure.add_subplot(grid[len(scans), 2 * column : 2 * column + 2]), scans, axis_index, axis_label)
    figure.suptitle(title)
    return figure


def _projections(figure: Figure, grid: Any, row: int, label: str, scan: VolumeScan) -> None:
    """The three maximum projections of one scan, on the physical aspect ratio, with scale bars."""
    low, high = _contrast(scan.projections["yx"])
    spacing = scan.spacing_zyx
    for column, (view, axes_labels, aspect) in enumerate(
        (
            ("yx", ("x", "y"), spacing[1] / spacing[2]),
            ("zx", ("x", "z"), spacing[0] / spacing[2]),
            ("zy", ("y", "z"), spacing[0] / spacing[1]),
        )
    ):
        axis = figure.add_subplot(grid[row, column])
        image = scan.projections[view]
        # projections were block-downsampled; keep the physical aspect ratio
        scale_rows = scan.shape["zyx".index(view[0])] / image.shape[0]
        scale_cols = scan.shape["zyx".index(view[1])] / image.shape[1]
        axis.imshow(
            image, cmap="gray", vmin=low, vmax=high, aspect=aspect * scale_rows / scale_cols, interpolation="nearest"
        )
        axis.set_title(f"{label}: max projection {view}", fontsize=9)
        axis.set_xlabel(axes_labels[0], fontsize=8)
        axis.set_ylabel(axes_labels[1], fontsize=8)
        axis.set_xticks([])  # the scale bar gives the size
        axis.set_yticks([])
        add_scale_bar(axis, spacing["zyx".index(view[1])] * scale_cols, image.shape[1])


def _description(info: Any, label: str, scan: VolumeScan) -> None:
    """Name, shape, voxel size, percentiles and foreground of one scan, as text."""
    info.axis("off")
    lines = [
        f"{label}: {scan.name}",
        f"shape {'x'.join(map(str, scan.shape))} {scan.dtype}",
        f"spacing {'x'.join(f'{s:g}' for s in scan.spacing_zyx)} um",
        f"p2 {scan.percentile(2):.4g}   p99.8 {scan.percentile(99.8):.4g}",
        f"foreground {100 * scan.foreground_fraction:.1f} % (Otsu {scan.foreground_threshold:.4g})",
    ]
    info.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")


def _profiles(axis: Any, scans: list[tuple[str, VolumeScan]], axis_index: int, axis_label: str) -> None:
    """The mean profile of every scan along one axis (0: z, 2: x) against micrometres, on the challenge's scale."""
    for label, scan in scans:
        # each image on the challenge's scale, so angle and fused compare despite different gains
        low, high = scan.percentile(2), scan.percentile(99.8)
        values = np.asarray(scan.profile_z if axis_index == 0 else scan.profile_x, dtype=np.float64)
        profile = (values - low) / (high - low if high > low else 1.0)
        # voxel centres, in micrometres from the first plane (z) or column (x)
        axis.plot((np.arange(len(profile)) + 0.5) * scan.spacing_zyx[axis_index], profile, label=label)
    axis.set_xlabel(f"{axis_label}, µm", fontsize=8)
    axis.set_ylabel("mean, normalised (p2 -> 0, p99.8 -> 1)", fontsize=8)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=8)
