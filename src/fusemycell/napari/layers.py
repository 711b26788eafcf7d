"""Image layers for napari from the project's volumes: physical scale, names, contrast limits.

A layer is napari's "layer data" tuple ``(data, keyword arguments, "image")``, so the reader, the
sample data and the widget build it the same way, without importing napari.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.io.naming import volume_stem
from fusemycell.io.pairs import PairingError, parse_filename
from fusemycell.io.volume import Volume
from fusemycell.normalization import CHALLENGE_PERCENTILES

#: Voxels read to estimate the contrast limits of a volume (a sample of planes, strided in y and x).
CONTRAST_SAMPLE_VOXELS = 1 << 22
#: Planes read at most for that estimate.
CONTRAST_SAMPLE_PLANES = 16

LayerData = tuple[Any, dict[str, Any], str]


def contrast_limits(data: Any, percentiles: tuple[float, float] = CHALLENGE_PERCENTILES) -> tuple[float, float]:
    """Display range of a ZYX array-like: its percentiles 2 and 99.8 (the challenge's), from a sample.

    Reads at most :data:`CONTRAST_SAMPLE_PLANES` evenly spaced z-planes, strided in y and x to about
    :data:`CONTRAST_SAMPLE_VOXELS` voxels, so a lazily read volume of several GB costs a few planes.
    A constant image gets a range of one grey level above its value.
    """
    depth, height, width = (int(s) for s in data.shape[-3:])
    planes = np.unique(np.linspace(0, depth - 1, min(depth, CONTRAST_SAMPLE_PLANES)).round().astype(int))
    per_plane = max(1, CONTRAST_SAMPLE_VOXELS // len(planes))
    stride = max(1, int(np.ceil(np.sqrt(height * width / per_plane))))
    sample = np.concatenate([np.asarray(data[int(z), ::stride, ::stride]).ravel() for z in planes])
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(sample, percentiles))
    return (low, high) if high > low else (low, low + 1.0)


def volume_name(source: str | Path) -> str:
    """The layer name of a file: its name without the format suffix (``image_3_nucleus_angle``)."""
    return volume_stem(Path(str(source).rstrip("/")).name)


def prediction_name(name: str) -> str:
    """The layer name of the prediction of layer ``name``: ``image_3_nucleus_angle fused (predicted)``."""
    return f"{name} fused (predicted)"


def channel_and_kind(name: str, metadata: dict[str, Any] | None = None) -> tuple[str | None, str | None]:
    """``(channel, kind)`` from a FuseMyCell name (``nucleus``, ``angle``), else the file's ``channel`` metadata."""
    try:
        parsed = parse_filename(f"{volume_stem(name)}.tif")
        return parsed.channel, parsed.kind
    except PairingError:
        channel = (metadata or {}).get("channel")
        return (str(channel) if channel else None), None


def volume_layer(volume: Volume, name: str, **extra: Any) -> LayerData:
    """An image layer of ``volume``: its voxel size as ``scale`` (ZYX, micrometres), the challenge's contrast.

    The layer's metadata keeps the channel (nucleus or membrane), the kind (angle = single view,
    fused), the voxel size and the source file, so the widget can predict it and name the result.
    """
    channel, kind = channel_and_kind(name, volume.metadata)
    metadata = {
        "fusemycell": {
            "channel": channel,
            "kind": kind,
            "spacing_zyx": tuple(float(s) for s in volume.spacing_zyx),
            "source": volume.source,
            "file_metadata": dict(volume.metadata),
        }
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(float(s) for s in volume.spacing_zyx),
        "units": ("micrometer",) * 3,
        "axis_labels": ("z", "y", "x"),
        "contrast_limits": contrast_limits(volume.data),
        "colormap": "gray",
        "metadata": metadata,
        **extra,
    }
    return volume.data, kwargs, "image"
