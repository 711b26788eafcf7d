"""Nodes of the patching pipeline: thin wrappers around :mod:`fusemycell.patching`."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import pandas as pd

from fusemycell.configuration import load_config
from fusemycell.io.pairs import PairListing
from fusemycell.io.tiff import read_volume
from fusemycell.patching.config import PatchingConfig, resolve_patch_size
from fusemycell.patching.extract import PatchPlan
from fusemycell.patching.sampling import foreground_grid, patch_count, sample_origins

logger = logging.getLogger(__name__)

#: Splits that patches are cut from; test volumes are never seen by patching or training.
PATCHED_SPLITS = ("train", "val")


def sample_patches(
    normalized_volumes: PairListing,
    preprocessing_records: pd.DataFrame,
    volume_split: pd.DataFrame,
    patching: dict[str, Any],
) -> tuple[PatchPlan, PatchPlan, dict[str, Any]]:
    """Draw signal-focused patch origins for the train and val volumes.

    Returns one :class:`PatchPlan` per split (the patch-store dataset cuts them
    while saving, one patch in memory at a time) and a sampling report.
    """
    config = load_config(PatchingConfig, patching, "patching")
    split_of = dict(zip(volume_split["pair"], volume_split["split"]))
    fused_records = preprocessing_records[preprocessing_records["kind"] == "fused"].set_index("pair")
    pairs = sorted(pair for pair, split in split_of.items() if split in PATCHED_SPLITS)
    missing = [pair for pair in pairs if pair not in normalized_volumes]
    if missing:
        raise ValueError(
            f"normalized volumes missing for {', '.join(missing)}; run 'kedro run --pipelines preprocessing' first"
        )
    spacings = [
        tuple(fused_records.loc[pair, [f"output_spacing_{a}_um" for a in "zyx"]])
        for pair in pairs
        if split_of[pair] == "train"
    ]
    patch = resolve_patch_size(config, spacings)
    block = config.foreground.block_zyx or tuple(max(1, p // 2) for p in patch)
    logger.info("patch size %s voxels, foreground blocks %s", "x".join(map(str, patch)), "x".join(map(str, block)))

    rows: list[dict[str, Any]] = []
    per_volume = []
    for pair in pairs:
        record = fused_records.loc[pair]
        volume = normalized_volumes[pair]
        fused = read_volume(volume.fused, lazy=True).data
        level = config.foreground.threshold * float(record["p99_9_normalized"])
        grid = foreground_grid(fused, block, level, config.slab_depth)
        fused.close()
        foreground_voxels = grid.foreground_voxels(fused.shape)
        count = patch_count(
            foreground_voxels,
            config.patches_per_megavoxel,
            config.min_patches_per_volume,
            config.max_patches_per_volume,
        )
        rng = np.random.default_rng([config.seed, zlib.crc32(pair.encode())])
        origins = sample_origins(
            fused.shape, patch, grid, count=count, background_fraction=config.background_fraction, rng=rng
        )
        for (z, y, x), drawn in origins:
            rows.append(
                {
                    "pair": pair,
                    "channel": record["channel"],
                    "study": record["study"],
                    "split": split_of[pair],
                    "origin_z": z,
                    "origin_y": y,
                    "origin_x": x,
                    "drawn": drawn,
                    "foreground_level": level,
                    **{f"spacing_{a}_um": float(record[f"output_spacing_{a}_um"]) for a in "zyx"},
                    "angle_path": volume.angle,
                    "fused_path": volume.fused,
                }
            )
        per_volume.append(
            {
                "pair": pair,
                "split": split_of[pair],
                "shape": list(fused.shape),
                "foreground_voxels": foreground_voxels,
                "patches": count,
            }
        )
    index = pd.DataFrame(rows)
    plans = {
        split: PatchPlan(
            index=index[index["split"] == split].reset_index(drop=True),
            patch_size_zyx=patch,
            dtype=config.store_dtype,
            split=split,
        )
        for split in PATCHED_SPLITS
    }
    for split, plan in plans.items():
        if plan.index.empty:
            raise ValueError(f"no {split} volume to cut patches from; check preprocessing.split in parameters")
    report = {
        "patch_size_zyx": list(patch),
        "foreground_block_zyx": list(block),
        "patches": {split: len(plan.index) for split, plan in plans.items()},
        "drawn_from_foreground": float((index["drawn"] == "foreground").mean()),
        "volumes": per_volume,
    }
    return plans["train"], plans["val"], report
