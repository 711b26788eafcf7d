"""Train/validation/test split by volume (never by patch), stratified by channel and study."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "val", "test")


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
