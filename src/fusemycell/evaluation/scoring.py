"""Scores of one test volume: the model and the two baselines, with the challenge's metrics."""

from __future__ import annotations

from typing import Any

from fusemycell.evaluation.baselines import GaussianBlurred, blur_sigma
from fusemycell.metrics.segmentation import iou_scores, normalized_iou
from fusemycell.metrics.ssim import image_statistics, normalized_ssim, ssim

#: Methods scored for every test volume.
METHODS = ("model", "identity", "gaussian_blur")


def score_pair(
    single_view: Any,
    fused: Any,
    prediction: Any,
    channel: str,
    *,
    blur_sigmas: dict[str, float] | None = None,
    segmenter: str = "skimage",
    anisotropy: float = 1.0,
    with_iou: bool = True,
) -> list[dict[str, Any]]:
    """SSIM, N_SSIM, IoU and N_IoU of the prediction and the baselines against the fused volume.

    The identity baseline is the single view itself (N_SSIM and N_IoU 0 by
    definition); the blur baseline is a 3D Gaussian blur of it.
    """
    blurred = GaussianBlurred(single_view, blur_sigma(channel, blur_sigmas))
    candidates = {"model": prediction, "identity": single_view, "gaussian_blur": blurred}
    # one statistics pass per volume, shared by SSIM and the segmentation
    stats = {name: image_statistics(volume) for name, volume in candidates.items()}
    stats["target"] = image_statistics(fused)
    ssims = {
        name: ssim(volume, fused, statistics=(stats[name], stats["target"])) for name, volume in candidates.items()
    }
    ious = (
        iou_scores(fused, candidates, channel, segmenter=segmenter, anisotropy=anisotropy, statistics=stats)
        if with_iou
        else {}
    )
    rows = []
    for name in METHODS:
        rows.append(
            {
                "method": name,
                "ssim": ssims[name],
                "n_ssim": normalized_ssim(ssims[name], ssims["identity"]),
                "iou": ious.get(name, float("nan")),
                "n_iou": normalized_iou(ious[name], ious["identity"]) if ious else float("nan"),
            }
        )
    return rows
