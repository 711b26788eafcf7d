"""Segmentation-based score N_IoU, with an offline scikit-image segmenter (Cellpose optional).

The challenge segmented prediction, input and ground truth with Cellpose (after
isotropic resampling) and scored ``N_IoU = (IoU_pred - IoU_input) / (1 - IoU_input)``,
IoU against the ground truth's segmentation. The default here needs no weights
and works slab by slab on volumes of any size, so our N_IoU is an approximation
of the challenge's:

* ``nucleus``: nuclei = voxels above Otsu's threshold after a Gaussian smoothing;
* ``membrane``: cells from membranes = voxels inside the specimen (smoothed
  signal above a fraction of Otsu's threshold) that are not membrane.

IoU is the overlap of those foreground masks (semantic, not instance-matched).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from fusemycell.errors import UserError
from fusemycell.metrics.ssim import ImageStatistics, image_statistics


class SegmenterUnavailable(UserError, RuntimeError):
    """The requested segmentation backend cannot run here; the message says why and what to do."""


def _smoothed_slab(volume: Any, z0: int, z1: int, sigma: float) -> np.ndarray:
    halo = int(math.ceil(4 * sigma))
    start, stop = max(0, z0 - halo), min(volume.shape[0], z1 + halo)
    block = np.asarray(volume[start:stop], dtype=np.float32)
    smoothed = gaussian_filter(block, sigma, mode="reflect") if sigma > 0 else block
    return smoothed[z0 - start : z0 - start + (z1 - z0)]


def foreground(
    volume: Any,
    z0: int,
    z1: int,
    *,
    stats: ImageStatistics,
    channel: str,
    sigma: float = 1.0,
    specimen_fraction: float = 0.3,
) -> np.ndarray:
    """The segmented foreground of planes ``[z0, z1)`` (nuclei, or cell interiors for membranes)."""
    smoothed = _smoothed_slab(volume, z0, z1, sigma)
    threshold = stats.otsu
    if channel == "nucleus":
        return smoothed > threshold
    background = stats.minimum
    specimen = _smoothed_slab(volume, z0, z1, 4 * sigma) > background + specimen_fraction * (threshold - background)
    return specimen & ~(smoothed > threshold)


def iou_scores(
    target: Any,
    candidates: Mapping[str, Any],
    channel: str,
    *,
    slab_depth: int = 16,
    sigma: float = 1.0,
    segmenter: str = "skimage",
    anisotropy: float = 1.0,
    statistics: Mapping[str, ImageStatistics] | None = None,
) -> dict[str, float]:
    """IoU of each candidate's segmentation with the target's.

    ``skimage`` streams over z-slabs. ``cellpose`` (optional) loads each volume
    whole and runs Cellpose in 3D with ``anisotropy`` (z / xy voxel size), which
    resamples to isotropic as the challenge did; it needs the package and its
    weights on disk. ``statistics`` (keyed by candidate name, and ``"target"``)
    reuses :func:`image_statistics` already computed, saving a pass over each volume.
    """
    if segmenter == "cellpose":
        return _cellpose_iou(target, candidates, channel, anisotropy)
    if segmenter != "skimage":
        raise ValueError(f"unknown segmenter {segmenter!r}; expected 'skimage' or 'cellpose'")
    if channel not in ("nucleus", "membrane"):
        raise ValueError(f"unknown channel {channel!r}; expected 'nucleus' or 'membrane'")
    known = dict(statistics or {})
    stats_target = known.get("target") or image_statistics(target)
    stats = {name: known.get(name) or image_statistics(volume) for name, volume in candidates.items()}
    intersections = dict.fromkeys(candidates, 0)
    unions = dict.fromkeys(candidates, 0)
    for z0 in range(0, target.shape[0], slab_depth):
        z1 = min(z0 + slab_depth, target.shape[0])
        truth = foreground(target, z0, z1, stats=stats_target, channel=channel, sigma=sigma)
        for name, volume in candidates.items():
            mask = foreground(volume, z0, z1, stats=stats[name], channel=channel, sigma=sigma)
            intersections[name] += int(np.count_nonzero(mask & truth))
            unions[name] += int(np.count_nonzero(mask | truth))
    return {name: intersections[name] / unions[name] if unions[name] else 1.0 for name in candidates}


def normalized_iou(iou_prediction: float, iou_input: float) -> float:
    """``N_IoU = (IoU_pred - IoU_input) / (1 - IoU_input)``; NaN when the input's IoU is already 1."""
    return (iou_prediction - iou_input) / (1 - iou_input) if iou_input < 1 else float("nan")


def require_cellpose() -> Any:
    """Import Cellpose and check its weights are on disk (nothing is downloaded at run time)."""
    try:
        import cellpose  # noqa: F401
        from cellpose import models
    except ImportError as exc:
        raise SegmenterUnavailable(
            "metrics.segmenter is 'cellpose' but Cellpose is not installed: pip install cellpose, and put its model "
            "weights in CELLPOSE_LOCAL_MODELS_PATH (nothing is downloaded at run time); or use segmenter: skimage"
        ) from exc
    import os
    from pathlib import Path

    folder = Path(os.environ.get("CELLPOSE_LOCAL_MODELS_PATH", Path.home() / ".cellpose" / "models"))
    if not folder.is_dir() or not any(folder.iterdir()):
        raise SegmenterUnavailable(
            f"metrics.segmenter is 'cellpose' but no Cellpose weights were found in {folder}; copy them there "
            "(or set CELLPOSE_LOCAL_MODELS_PATH): fusemycell never downloads weights at run time"
        )
    return models


def _cellpose_iou(target: Any, candidates: Mapping[str, Any], channel: str, anisotropy: float) -> dict[str, float]:
    """IoU of Cellpose foregrounds (whole volumes in memory; untested here: no Cellpose weights offline)."""
    models = require_cellpose()
    model = models.CellposeModel(model_type="nuclei" if channel == "nucleus" else "cyto2")

    def mask(volume: Any) -> np.ndarray:
        labels = model.eval(np.asarray(volume, dtype=np.float32), do_3D=True, anisotropy=anisotropy, channels=[0, 0])[0]
        return np.asarray(labels) > 0

    truth = mask(target)
    scores = {}
    for name, volume in candidates.items():
        candidate = mask(volume)
        union = int(np.count_nonzero(candidate | truth))
        scores[name] = int(np.count_nonzero(candidate & truth)) / union if union else 1.0
    return scores
