"""File names of volumes: formats by suffix, names without their suffix, the prediction's name.

One place for the rules every package uses: a single view may be a TIFF (``.tif``, ``.tiff``,
``.ome.tif``) or an OME-Zarr image (a ``.zarr`` folder), and a prediction keeps its input's name.
"""

from __future__ import annotations

import os

#: The suffixes of a TIFF volume (``.ome.tif`` ends in ``.tif``).
TIFF_SUFFIXES = (".tif", ".tiff")
#: Every volume suffix, longest first (``.ome.tif`` before ``.tif``).
VOLUME_SUFFIXES = (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif")
#: Output formats of the inference pipeline (``inference.output_format``).
OUTPUT_FORMATS = ("tiff", "ome-zarr")


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an OME-Zarr image (a ``.zarr`` folder), not a TIFF."""
    return str(path).rstrip("/\\").lower().endswith(".zarr")


def volume_stem(name: str) -> str:
    """A volume's name without its format suffix: ``image_3_nucleus_angle`` for ``.tif``, ``.ome.zarr``, ..."""
    lowered = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_name(name: str, output_format: str) -> str:
    """The prediction's name for input ``name``: the same name in its own format, else the stem in the other's.

    ``image_3_angle.tif`` -> ``image_3_angle.tif`` (tiff) or ``image_3_angle.ome.zarr`` (ome-zarr).
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output format {output_format!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    if (output_format == "ome-zarr") == is_ome_zarr(name):
        return name
    return volume_stem(name) + (".ome.zarr" if output_format == "ome-zarr" else ".tif")
