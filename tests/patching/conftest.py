"""Helpers shared by the patching, position and inference tests: a synthetic specimen and its patch store."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusemycell.io.tiff import write_volume
from fusemycell.models.card import PreprocessingContract
from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.extract import PatchPlan
from fusemycell.position import PositionChannels


def textured_ellipsoid(shape, seed=0, centre=None, radii=None):
    """A normalised single view: a textured ellipsoid (0.4-1.0) on a dim noisy background (0-0.05)."""
    rng = np.random.default_rng(seed)
    centre = centre if centre is not None else [n / 2 for n in shape]
    radii = radii if radii is not None else [0.35 * n for n in shape]
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) + 0.5 for n in shape], indexing="ij")
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    volume = 0.05 * rng.random(shape, dtype=np.float32)
    volume[inside] = 0.4 + 0.6 * rng.random(int(inside.sum()), dtype=np.float32)
    return volume


def position_store(directory, volume, spacing_zyx, origins, patch_size, *, position=None, pair="image_0_nucleus"):
    """A patch store cut by :class:`PatchPlan` from ``volume`` (written as a TIFF next to the store).

    ``position`` None: the default position channels; the manifest carries it as patching's planning does.
    """
    position = PositionChannels(enabled=True) if position is None else position
    folder = directory.parent
    angle_path = write_volume(folder / f"{pair}_angle.tif", volume, spacing_zyx)
    fused_path = write_volume(folder / f"{pair}_fused.tif", 2 * volume, spacing_zyx)
    index = pd.DataFrame(
        {
            "pair": pair,
            "channel": "nucleus",
            "origin_z": [int(o[0]) for o in origins],
            "origin_y": [int(o[1]) for o in origins],
            "origin_x": [int(o[2]) for o in origins],
            "foreground_level": 0.5,
            "angle_path": str(angle_path),
            "fused_path": str(fused_path),
            "spacing_z_um": float(spacing_zyx[0]),
            "spacing_y_um": float(spacing_zyx[1]),
            "spacing_x_um": float(spacing_zyx[2]),
        }
    )
    manifest = {
        "preprocessing": PreprocessingContract().model_dump(mode="json"),
        "augmentation": AugmentationParams().model_dump(mode="json"),
        "position": position.model_dump(mode="json"),
    }
    plan = PatchPlan(index, tuple(patch_size), "float32", "train", manifest=manifest, position=position)
    plan.write(directory)
    return directory
