"""Train/validation/test split by volume (never by patch), stratified by channel and study."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.errors import Setting, UserError

SPLITS = ("train", "val", "test")

#: Columns of a split table: the pair, its stratum, and which files (by content) it was made from.
SPLIT_COLUMNS = ("pair", "channel", "study", "angle_file", "angle_digest", "fused_file", "fused_digest", "split")


class SplitMismatchError(UserError):
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
        "the split (data/02_intermediate/split.csv) was made from {made_from}, but {problems}: pass the raw_dir "
        "preprocessing used ({raw_dir}), or re-run preprocessing on this folder",
        made_from=", ".join(made_from),
        problems="; ".join(problems),
        raw_dir=Setting("raw_dir", "PATH"),
    )


def split_by_volume(
    volumes: Sequence[dict[str, str]],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    min_per_split: int = 1,
    test_studies: Sequence[str] = (),
) -> dict[str, str]:
    """Assign each volume (dicts with ``pair``, ``channel``, ``study``) to a split.

    Volumes are shuffled within each ``(study, channel)`` stratum, strata are
    interleaved (one volume of each in turn), and test then validation take
    their share from the front: every stratum contributes in turn, so channels
    and studies are spread over the splits as evenly as the counts allow. Every
    study with at least 3 volumes gets a validation volume (more than
    ``val_fraction`` asks if need be): the epoch choice and the guard then see
    every study. The result depends only on the volumes and ``seed``.

    Every volume of ``test_studies`` is test (leave-one-study-out); the fractions then apply to the
    volumes of the other studies. A ``ValueError`` names a study that no volume has, or holding out all.

    Returns
    -------
    dict
        ``pair -> "train" | "val" | "test"``.
    """
    held_out = _held_out(volumes, test_studies)
    if held_out:  # the other studies split as they would alone
        rest = [v for v in volumes if v["pair"] not in held_out]
        return split_by_volume(rest, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                               min_per_split=min_per_split) | dict.fromkeys(held_out, "test")  # fmt: skip
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
    study_of = {v["pair"]: str(v["study"]) for v in volumes}
    remaining = order[n_test:]
    val = _one_per_study(remaining, study_of, n_val) if n_val else []
    val += [pair for pair in remaining if pair not in val][: max(0, n_val - len(val))]
    assignment = {pair: "train" for pair in order}
    assignment.update({pair: "test" for pair in order[:n_test]})
    assignment.update({pair: "val" for pair in val})
    return assignment


TEST_STUDIES = Setting("preprocessing.split.test_studies")


def _held_out(volumes: Sequence[dict[str, str]], test_studies: Sequence[str]) -> set[str]:
    """The pairs of ``test_studies``, checked against the studies the volumes have."""
    if not test_studies:
        return set()
    studies = sorted({str(v["study"]) for v in volumes})
    unknown = [s for s in test_studies if s not in studies]
    if unknown:
        raise UserError(
            "{setting} names {unknown}, but the volumes' studies are {studies} (the study in each file's metadata)",
            setting=TEST_STUDIES,
            unknown=", ".join(map(repr, unknown)),
            studies=", ".join(map(repr, studies)),
        )
    if set(studies) <= set(test_studies):
        raise UserError(
            "{setting} holds out every study ({studies}): leave at least one to train on",
            setting=TEST_STUDIES,
            studies=", ".join(map(repr, studies)),
        )
    return {v["pair"] for v in volumes if str(v["study"]) in test_studies}


def _one_per_study(candidates: Sequence[str], study_of: Mapping[str, str], n_val: int) -> list[str]:
    """A validation volume of every study with at least 3 volumes (so the epoch choice and the guard see every
    study), taken in ``candidates``' order, never a study's last training volume; at least ``n_val`` in all."""
    counts: dict[str, int] = {}
    for study in study_of.values():
        counts[study] = counts.get(study, 0) + 1
    left = {study: sum(1 for p in candidates if study_of[p] == study) for study in counts}
    chosen = []
    for pair in candidates:
        study = study_of[pair]
        if counts[study] >= 3 and left[study] >= 2 and all(study_of[c] != study for c in chosen):
            chosen.append(pair)
    return chosen


class TooFewPairsError(UserError):
    """The raw folder holds too few complete pairs to train, validate and test on."""


def pairs_needed(*, val_fraction: float, test_fraction: float, min_per_split: int = 1) -> int:
    """The fewest complete pairs that :func:`split_by_volume` turns into training, validation and (with a
    ``test_fraction``) test volumes."""
    for total in range(1, 64):
        volumes = [{"pair": f"image_{i}_nucleus", "channel": "nucleus", "study": "-"} for i in range(total)]
        splits = set(
            split_by_volume(
                volumes, val_fraction=val_fraction, test_fraction=test_fraction, seed=0, min_per_split=min_per_split
            ).values()
        )
        if {"train", "val"} <= splits and ("test" in splits or test_fraction == 0):
            return total
    return 64


def check_enough_pairs(
    channels: Sequence[str], where: str, *, val_fraction: float, test_fraction: float, min_per_split: int = 1
) -> None:
    """Refuse, before anything is written, a raw folder with too few complete pairs to split.

    Raises
    ------
    TooFewPairsError
        Saying how many pairs are needed, how many ``where`` holds per channel, and what to change.
    """
    needed = pairs_needed(val_fraction=val_fraction, test_fraction=test_fraction, min_per_split=min_per_split)
    if len(channels) >= needed:
        return
    counts = ", ".join(f"{c} {list(channels).count(c)}" for c in ("nucleus", "membrane"))
    test = "one to test ({no_test} leaves the test out)" if test_fraction > 0 else "no test volume ({no_test})"
    raise TooFewPairsError(
        "{where} holds {count} complete angle/fused pair{s} ({counts}); training needs at least {needed}: one to "
        "train on, one to validate (it chooses the epoch and the guard), " + test + ". Add pairs named "
        "image_N_nucleus|membrane_angle|fused.tif to {where}.",
        where=where,
        count=len(channels),
        s="s" if len(channels) != 1 else "",
        counts=counts,
        needed=needed,
        no_test=Setting("preprocessing.split.test_fraction", "0", assignment=False),
    )
