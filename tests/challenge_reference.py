"""The challenge's formulas written out as its evaluation script computes them, on whole in-memory arrays.

What the project's exact, slab-wise code is checked against; not used by ``src/``.
"""

import numpy as np

CHALLENGE_PERCENTILES = (2.0, 99.8)


def percentile_normalize(
    image: np.ndarray, p_low: float = CHALLENGE_PERCENTILES[0], p_high: float = CHALLENGE_PERCENTILES[1]
) -> np.ndarray:
    """``(image - low) / (high - low)`` with NumPy's percentiles, no clipping; a constant image unchanged."""
    low = np.percentile(image, p_low)
    high = np.percentile(image, p_high)
    if low == high:
        return image
    return (image - low) / (high - low)
