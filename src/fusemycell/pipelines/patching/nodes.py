"""Nodes of the patching pipeline: thin wrappers around :mod:`fusemycell.patching`."""

from __future__ import annotations

import pandas as pd

from fusemycell.io.pairs import PairListing
from fusemycell.parameters import Validated
from fusemycell.patching.config import PatchingConfig
from fusemycell.patching.extract import PatchPlan
from fusemycell.patching.planning import plan_patch_stores


def sample_patches(
    normalized_volumes: PairListing,
    preprocessing_records: pd.DataFrame,
    volume_split: pd.DataFrame,
    patching: Validated[PatchingConfig],
) -> tuple[PatchPlan, PatchPlan, dict]:
    """Draw signal-focused patch origins for the train and val volumes.

    Returns one :class:`PatchPlan` per split (the patch-store dataset cuts them
    while saving, one patch in memory at a time) and a sampling report.
    """
    plans, report = plan_patch_stores(normalized_volumes, preprocessing_records, volume_split, patching)
    return plans["train"], plans["val"], report
