"""Planning the patch stores: which patches to cut from which preprocessed volumes, and the stores' manifest.

:func:`plan_patch_stores` draws signal-focused patch origins for the train and
validation volumes and returns one :class:`~fusemycell.patching.extract.PatchPlan`
per split (cut while the store is saved, one patch in memory at a time). Each
store's manifest (``store.json``) carries what training needs from the steps
before it: the preprocessing contract (normalisation, crop policy, resampling
target, read back as :class:`~fusemycell.models.card.PreprocessingContract`) and
the augmentation of the training patches.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fusemycell.io.formats import read_volume
from fusemycell.models.card import PreprocessingContract
from fusemycell.patching.config import PatchingConfig, resolve_patch_size
from fusemycell.patching.extract import PatchPlan
from fusemycell.patching.sampling import foreground_grid, patch_count, sample_origins
from fusemycell.preprocessing.policy import policy_from_columns

logger = logging.getLogger(__name__)

#: Splits that patches are cut from; test volumes are never seen by patching or training.
PATCHED_SPLITS = ("train", "val")


def preprocessing_contract(records: pd.DataFrame) -> PreprocessingContract:
    """What preprocessing did, from its table (``02_intermediate/preprocessing.csv``).

    Raises
    ------
    ValueError
        When the table predates the policy columns (re-run preprocessing).
    """
    normalization, crop, target = policy_from_columns(records.iloc[0] if len(records) else {})
    return PreprocessingContract(normalization=normalization, crop=crop, resample_spacing_zyx=target)


def _volume_patches(
    pair: str, volume: Any, record: pd.Series, split: str, *, patch: Any, block: Any, config: PatchingConfig
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Patch rows of one pair, and its line of the sampling report."""
    fused = read_volume(volume.fused, lazy=True).data
    level = config.foreground.threshold * float(record["p99_9_normalized"])
    grid = foreground_grid(fused, block, level, config.slab_depth)
    fused.close()
    foreground_voxels = grid.foreground_voxels(fused.shape)
    count = patch_count(
        foreground_voxels, config.patches_per_megavoxel, config.min_patches_per_volume, config.max_patches_per_volume
    )
    rng = np.random.default_rng([config.seed, zlib.crc32(pair.encode())])
    origins = sample_origins(
        fused.shape, patch, grid, count=count, background_fraction=config.background_fraction, rng=rng
    )
    common = {
        "pair": pair,
        "channel": record["channel"],
        "study": record["study"],
        "split": split,
        "foreground_level": level,
        # SSIM's data range for this volume's patches, as the challenge computes it for the whole volume
        "data_range": float(record.get("normalized_range", float("nan"))),
        **{f"spacing_{a}_um": float(record[f"output_spacing_{a}_um"]) for a in "zyx"},
        **{f"acquisition_spacing_{a}_um": float(record[f"spacing_{a}_um"]) for a in "zyx"},
        **{f"size_{a}": int(n) for a, n in zip("zyx", fused.shape)},
        "angle_path": volume.angle,
        "fused_path": volume.fused,
    }
    rows = [{**common, "origin_z": z, "origin_y": y, "origin_x": x, "drawn": drawn} for (z, y, x), drawn in origins]
    summary = {"pair": pair, "split": split, "shape": list(fused.shape), "foreground_voxels": foreground_voxels}
    return rows, {**summary, "patches": count}


def plan_patch_stores(
    normalized_volumes: Mapping[str, Any],
    preprocessing_records: pd.DataFrame,
    volume_split: pd.DataFrame,
    config: PatchingConfig,
) -> tuple[dict[str, PatchPlan], dict[str, Any]]:
    """One :class:`PatchPlan` per split in :data:`PATCHED_SPLITS`, and the sampling report."""
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
        volume_rows, summary = _volume_patches(
            pair,
            normalized_volumes[pair],
            fused_records.loc[pair],
            split_of[pair],
            patch=patch,
            block=block,
            config=config,
        )
        rows += volume_rows
        per_volume.append(summary)
    index = pd.DataFrame(rows)
    manifest = {
        "preprocessing": preprocessing_contract(preprocessing_records).model_dump(mode="json"),
        "augmentation": config.augmentation.model_dump(mode="json"),
    }
    plans = {}
    for split in PATCHED_SPLITS:
        selected = index[index["split"] == split].reset_index(drop=True) if len(index) else index
        if selected.empty:
            raise ValueError(f"no {split} volume to cut patches from; check preprocessing.split in parameters")
        plans[split] = PatchPlan(
            selected, patch, config.store_dtype, split, manifest=manifest, position=config.position
        )
    report = {
        "patch_size_zyx": list(patch),
        "foreground_block_zyx": list(block),
        "patches": {split: len(plan.index) for split, plan in plans.items()},
        "drawn_from_foreground": float((index["drawn"] == "foreground").mean()),
        "volumes": per_volume,
    }
    return plans, report
