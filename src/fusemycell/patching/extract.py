"""Cutting patches out of lazily read volumes, one box at a time.

Each patch reads only its own box from the angle and fused volumes (the raw
planes' rows, or the TIFF tiles it overlaps), so memory holds one patch whatever
the volume's size. Boxes that reach past a volume shorter than the patch are
padded by reflection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusemycell.io.formats import read_volume
from fusemycell.io.naming import volume_stem
from fusemycell.patching.store import write_patch_store, write_position_fields
from fusemycell.position import PositionChannels, PositionField, position_field

logger = logging.getLogger(__name__)


def read_patch(volume: Any, origin: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """The box ``origin + patch_size`` of ``volume``, reflect-padded where the volume is too short."""
    shape = volume.shape
    region = tuple(slice(o, min(o + p, n)) for o, p, n in zip(origin, patch_size, shape))
    box = np.asarray(volume[region], dtype=np.float32)
    missing = [p - b for p, b in zip(patch_size, box.shape)]
    if any(missing):
        # reflect needs two samples along an axis; a single plane is repeated instead
        modes = ["reflect" if size > 1 else "edge" for size in box.shape]
        for axis, (pad, mode) in enumerate(zip(missing, modes)):
            if pad:
                widths = [(0, 0)] * 3
                widths[axis] = (0, pad)
                box = np.pad(box, widths, mode=mode)
    return box


def cut_patches(
    angle: Any,
    fused: Any,
    rows: Sequence[tuple[int, Sequence[int]]],
    patch_size: Sequence[int],
    *,
    name: str = "",
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(row, angle_patch, fused_patch)`` for each ``(row, origin)``, in z order (sequential reads)."""
    short = [f"{axis} {n} < {p}" for axis, n, p in zip("zyx", angle.shape, patch_size) if n < p]
    if short:
        logger.info("%s is smaller than the patch (%s): patches are reflect-padded", name or "volume", ", ".join(short))
    for row, origin in sorted(rows, key=lambda item: tuple(item[1])):
        yield row, read_patch(angle, origin, patch_size), read_patch(fused, origin, patch_size)


@dataclass
class PatchPlan:
    """Which patches to cut from which volumes: what the patch-store dataset writes.

    ``index`` has one row per patch with at least ``pair``, ``angle_path``,
    ``fused_path``, ``origin_z``, ``origin_y``, ``origin_x`` and
    ``foreground_level`` (the fused value above which a voxel is foreground).
    Writing adds ``contains_foreground``, measured on the cut patch.
    """

    index: pd.DataFrame
    patch_size_zyx: tuple[int, int, int]
    dtype: str
    split: str
    manifest: dict[str, Any] = field(default_factory=dict)
    """Extra entries of the store's ``store.json`` (the preprocessing contract, the augmentation)."""
    position: PositionChannels = field(default_factory=lambda: PositionChannels(enabled=False))
    """Position channels: when enabled, the field of every volume's whole single view is kept in the store."""
    fields: dict[str, PositionField] = field(default_factory=dict)
    """The fields computed while cutting, by pair."""

    def patches(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Cut every patch, one volume pair at a time (each volume opened lazily once)."""
        contains = np.zeros(len(self.index), dtype=bool)
        for (angle_path, fused_path), rows in self.index.groupby(["angle_path", "fused_path"], sort=True):
            angle = read_volume(angle_path, lazy=True).data
            fused = read_volume(fused_path, lazy=True).data
            if self.position.enabled:
                first = rows.iloc[0]
                spacing = tuple(float(first[f"spacing_{a}_um"]) for a in "zyx")
                self.fields[str(first["pair"])] = position_field(angle, spacing, self.position, name=angle_path)
            # the index is 0..n-1 (see write), so row labels are store positions
            origins = [(int(r.Index), (int(r.origin_z), int(r.origin_y), int(r.origin_x))) for r in rows.itertuples()]
            levels = rows["foreground_level"].to_dict()
            for row, angle_patch, fused_patch in cut_patches(
                angle, fused, origins, self.patch_size_zyx, name=volume_stem(Path(angle_path).name)
            ):
                contains[row] = bool(np.max(fused_patch) > levels[row])
                yield row, angle_patch, fused_patch
            angle.close()
            fused.close()
        self.index["contains_foreground"] = contains

    def write(self, directory: str | Path) -> Path:
        """Write the store (atomically) with the index, ``contains_foreground`` included."""
        self.index = self.index.reset_index(drop=True)
        self.index["contains_foreground"] = False  # filled while cutting, before the index is written
        return write_patch_store(
            directory,
            self.index,
            self.patch_size_zyx,
            self.dtype,
            self.patches(),
            metadata={"split": self.split, **self.manifest, "position": self.position.model_dump(mode="json")},
            before_rename=(lambda folder: write_position_fields(folder, self.fields))
            if self.position.enabled
            else None,
        )
