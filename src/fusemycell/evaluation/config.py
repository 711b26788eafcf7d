"""``params:evaluation``: how the held-out test volumes are scored."""

from __future__ import annotations

from pydantic import Field

from fusemycell.configuration import StrictConfig


class EvaluationConfig(StrictConfig):
    """``params:evaluation``."""

    blur_sigma_voxels: dict[str, float] = Field(default_factory=lambda: {"nucleus": 0.442, "membrane": 0.5})
    """Sigma of the Gaussian-blur baseline per channel, in voxels (the public baseline's values)."""
    segmenter: str = "skimage"
    """Segmentation for N_IoU: ``skimage`` (offline, default) or ``cellpose`` (optional, weights on disk)."""
    iou: bool = True
    """Compute IoU and N_IoU (segmentation) besides SSIM and N_SSIM."""
