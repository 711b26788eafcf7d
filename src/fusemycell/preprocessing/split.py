"""Train/validation/test split by volume (never by patch), stratified by channel and study."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")

#: Columns of a split table: the pair, its stratum, and which files (by content) it was made from.
SPLIT_COLUMNS = ("pair", "channel", "study", "angle_file", "angle_digest", "fused_file", "fused_digest", "split")


class SplitMismatchError(ValueError):
    """The raw files a run reads are not the ones the split was made from."""


def split_row(pair: str, angle: Any, fused: Any) -> dict[str, str]:
    """One row of the split table from the two scans (:class:`~fusemycell.preprocessing.fingerprint.VolumeScan`)."""
    return {
        "pair": pair,
        "channel": angle.channel,
        "study": angle.study,
        "angle_file": angle.path,
        "angle_digest": angle.digest,
        "fused_file": fused.path,
        "fused_digest": fused.digest,
    }


def check_split_files(split: Any, pairs: Mapping[str, Any], digest: Callable[[str], str], where: str) -> None:
    """Refuse to go on when a pair of ``split`` is missing from ``pairs`` or holds other voxels.

    ``pairs`` maps pair keys to objects with ``angle`` and ``fused`` paths; ``digest`` computes a file's
    content digest; ``where`` names the folder read. Raises :class:`SplitMismatchError` naming the
    pairs, the folder read, and the folder the split was made from.
    """
    if "angle_digest" not in split.columns:
        raise SplitMismatchError(
            "the split (data/02_intermediate/split.csv) was written by an older fusemycell without content "
            "digests: re-run preprocessing"
        )
    missing, different = [], []
    for row in split.itertuples():
        pair = pairs.get(row.pair)
        if pair is None or pair.angle is None or pair.fused is None:
            missing.append(row.pair)
        elif digest(pair.angle) != row.angle_digest or digest(pair.fused) != row.fused_digest:
            different.append(row.pair)
    if not (missing or different):
        return
    made_from = sorted({str(Path(f).parent) for f in split["angle_file"]})
    problems = []
    if missing:
        problems.append(f"{', '.join(missing)} not in {where}")
    if different:
        problems.append(f"{', '.join(different)} in {where} hold other voxels than the files the split was made from")
    raise SplitMismatchError(
        f"the split (data/02_intermediate/split.csv) was made from {', '.join(made_from)}, but "
        + "; ".join(problems)
        + ": pass the raw_dir preprocessing used (--params raw_dir=PATH), or re-run preprocessing on this folder"
    )


def split_by_volume(
    volumes: Sequence[dict[str, str]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    min_per_split: int = 1,
) -> dict[str, str]:
    """Assign each volume (dicts with ``pair``, ``channel``, ``study``) to a split.

    Volumes are shuffled within each ``(study, channel)`` stratum, strata are
    interleaved (one volume of each in turn), and test then validation take
    their share from the front: every stratum contributes in turn, so channels
    and studies are spread over the splits as evenly as the counts allow. The
    result depends only on the volumes and ``seed``.

    Returns
    -------
    dict
        ``pair -> "train" | "val" | "test"``.
    """
    rng = np.random.default_rng(seed)
    strata: dict[tuple[str, str], list[str]] = {}
    for volume in sorted(volumes, key=lambda v: v["pair"]):
        strata.setdefault((str(volume["study"]), str(volume["channel"])), []).append(volume["pair"])
    for members in strata.values():
        rng.shuffle(members)
    order: list[str] = []
    keys = sorted(strata)
    for rank in range(max((len(m) for m in strata.values()), default=0)):
        order.extend(strata[key][rank] for key in keys if rank < len(strata[key]))

    total = len(order)
    floor = min_per_split if total >= 3 else 0
    n_test = max(floor, int(round(test_fraction * total))) if test_fraction > 0 else 0
    n_val = max(floor, int(round(val_fraction * total))) if val_fraction > 0 else 0
    n_test = min(n_test, max(0, total - 1))
    n_val = min(n_val, max(0, total - 1 - n_test))
    assignment = {}
    for index, pair in enumerate(order):
        assignment[pair] = "test" if index < n_test else "val" if index < n_test + n_val else "train"
    return assignment
