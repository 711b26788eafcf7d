"""Nodes of the preprocessing pipeline: thin wrappers around :mod:`fusemycell.preprocessing`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fusemycell.datasets import ParallelVolumes
from fusemycell.errors import Setting, UserError
from fusemycell.io.pairs import PairListing
from fusemycell.parameters import Validated
from fusemycell.patching.config import PatchingConfig, resolve_patch_size
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.preprocessing.figures import fingerprint_figure
from fusemycell.preprocessing.fingerprint import (
    FINGERPRINT_PERCENTILES,
    VolumeScan,
    available_cores,
    dataset_summary,
    scan_volumes,
)
from fusemycell.preprocessing.split import split_by_volume, split_row
from fusemycell.preprocessing.validation import validate_pairs
from fusemycell.preprocessing.volumes import plan_volumes

logger = logging.getLogger(__name__)


def scan_raw_volumes(raw_pairs: PairListing, config: Validated[PreprocessingConfig]) -> dict[str, VolumeScan]:
    """Fingerprint every raw file, slab by slab, ``preprocessing.workers`` files at a time."""
    wanted = sorted(
        set(FINGERPRINT_PERCENTILES) | {config.normalization.low_percentile, config.normalization.high_percentile}
    )
    jobs = [
        {
            "path": path,
            "pair": key,
            "kind": kind,
            "channel": pair.channel,
            "slab_depth": config.slab_depth,
            "percentiles": wanted,
            "projection_side": config.projection_side,
        }
        for key, pair in raw_pairs.items()
        for kind, path in (("angle", pair.angle), ("fused", pair.fused))
        if path is not None
    ]
    logger.info("fingerprinting %d files with %s worker(s)", len(jobs), config.workers or "all")
    return {scan.name: scan for scan in scan_volumes(jobs, config.workers)}


def summarize_fingerprint(volume_scans: dict[str, VolumeScan]) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The fingerprint as JSON (with profiles), as a table, and the per-study summary."""
    scans = list(volume_scans.values())
    summary = dataset_summary(scans)
    fingerprint = {"volumes": [scan.record() for scan in scans], "summary": summary}
    return fingerprint, pd.DataFrame([scan.row() for scan in scans]), pd.DataFrame(summary)


def plot_fingerprints(volume_scans: dict[str, VolumeScan]) -> dict[str, Callable[[], Figure]]:
    """One figure per pair, drawn lazily while saving (one figure in memory at a time)."""
    pairs = sorted({scan.pair for scan in volume_scans.values()})
    return {
        pair: partial(fingerprint_figure, volume_scans.get(f"{pair}_angle"), volume_scans.get(f"{pair}_fused"), pair)
        for pair in pairs
    }


def _spacings(volume_scans: dict[str, VolumeScan]) -> list[tuple[float, ...]]:
    return [scan.spacing_zyx for scan in volume_scans.values() if scan.error is None and scan.kind == "angle"]


def validate_raw_pairs(
    raw_pairs: PairListing,
    volume_scans: dict[str, VolumeScan],
    config: Validated[PreprocessingConfig],
    patch_config: Validated[PatchingConfig],
) -> dict[str, Any]:
    """Every problem of every pair, in one report (saved whatever the policy)."""
    report = validate_pairs(
        raw_pairs,
        volume_scans,
        patch_size_zyx=resolve_patch_size(patch_config, _spacings(volume_scans)),
        spacing_tolerance=config.spacing_tolerance,
    )
    for problem in report.problems:
        log = logger.error if problem.severity == "error" else logger.warning
        log("%s: %s (%s)", problem.pair, problem.problem, problem.file)
    return report.to_dict(policy=config.on_invalid)


def select_valid_pairs(validation_report: dict[str, Any], config: Validated[PreprocessingConfig]) -> list[str]:
    """Apply ``on_invalid``: ``fail`` stops naming every problem; ``skip`` keeps the valid pairs."""
    errors = [p for p in validation_report["problems"] if p["severity"] == "error"]
    if errors and config.on_invalid == "fail":
        listing = "\n".join(
            f"  - {p['pair']}: {p['problem']}" + ("" if p["file"] in p["problem"] else f" ({p['file']})")
            for p in errors
        )
        raise UserError(
            "{count} problem(s) in {pairs} pair(s) (full report in data/08_reporting/validation_report.json):\n"
            "{listing}\nFix the files, or set {skip} to leave these pairs out.",
            count=len(errors),
            pairs=len(validation_report["invalid_pairs"]),
            listing=listing,
            skip=Setting("preprocessing.on_invalid", "skip", assignment=False),
        )
    if errors:
        logger.warning(
            "skipping %d invalid pair(s): %s",
            len(validation_report["invalid_pairs"]),
            ", ".join(validation_report["invalid_pairs"]),
        )
    if not validation_report["valid_pairs"]:
        raise UserError("no valid angle/fused pair left to preprocess (see data/08_reporting/validation_report.json)")
    return list(validation_report["valid_pairs"])


def split_volumes(
    valid_pairs: list[str], volume_scans: dict[str, VolumeScan], config: Validated[PreprocessingConfig]
) -> pd.DataFrame:
    """Train/val/test by volume, stratified by channel and study, deterministic by seed.

    Each row also records the files and their content digests, so that a later run (evaluation)
    can check that it reads the very volumes the split was made from, not others of the same name.
    """
    volumes = [split_row(key, volume_scans[f"{key}_angle"], volume_scans[f"{key}_fused"]) for key in valid_pairs]
    assignment = split_by_volume(
        volumes,
        val_fraction=config.split.val_fraction,
        test_fraction=config.split.test_fraction,
        seed=config.split.seed,
        min_per_split=config.split.min_per_split,
        test_studies=config.split.test_studies,
    )
    table = pd.DataFrame(volumes).assign(split=lambda t: t["pair"].map(assignment))
    logger.info("split by volume: %s", table["split"].value_counts().to_dict())
    return table


def plan_normalized_volumes(
    raw_pairs: PairListing,
    volume_scans: dict[str, VolumeScan],
    valid_pairs: list[str],
    config: Validated[PreprocessingConfig],
    volume_split: pd.DataFrame | None = None,
) -> tuple[ParallelVolumes, pd.DataFrame]:
    """Crop, normalise (challenge percentiles) and optionally resample every valid pair.

    With ``resample.enabled: auto`` the target voxel size is chosen from the training and
    validation volumes of ``volume_split`` (never from the test volumes).

    Returns lazily computed volumes (written plane by plane by the dataset,
    ``preprocessing.workers`` at a time) and the table of what was done to each,
    which is what maps predictions back to the raw grid and intensity scale.
    """
    learnt = None if volume_split is None else list(volume_split.loc[volume_split["split"] != "test", "pair"])
    volumes, records = plan_volumes(raw_pairs, volume_scans, valid_pairs, config, learnt)
    return ParallelVolumes(volumes, workers=config.workers or available_cores()), pd.DataFrame(records)
