"""FuseMyCell metadata: the many spellings of voxel size, unit, channel and study.

The challenge volumes carry ImageJ-style ``key=value`` metadata whose keys were
written by different tools: ``PhysicalSizeX``, ``physicalsizex`` and
``physical_size_x`` all mean the same thing. This module maps every spelling to
one canonical name and turns sizes into micrometres. It does not read files;
:mod:`fusemycell.io.tiff_header` does.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

#: Metadata key that marks a file as a prediction written by fusemycell (safe to replace; never ground truth).
PROVENANCE_KEY = "fusemycell"
#: How the mark's value starts (the version follows).
PROVENANCE_PREFIX = "prediction by fusemycell"


def prediction_mark(metadata: dict[str, Any]) -> str:
    """The provenance mark of a file's metadata (``"prediction by fusemycell 0.x"``), or "" for any other file."""
    value = str(metadata.get(PROVENANCE_KEY, ""))
    return value if value.startswith(PROVENANCE_PREFIX) else ""


#: Canonical metadata keys written by :func:`fusemycell.io.tiff.write_volume`.
CANONICAL_KEYS = (
    "physical_size_x",
    "physical_size_y",
    "physical_size_z",
    "spacing",
    "unit",
    "axes",
    "channel",
    "study",
)

#: Spellings of the voxel-size keys found in the challenge data (``write_volume`` can use each).
SPACING_SPELLINGS = {
    "PhysicalSizeX": ("PhysicalSizeX", "PhysicalSizeY", "PhysicalSizeZ"),
    "physicalsizex": ("physicalsizex", "physicalsizey", "physicalsizez"),
    "physical_size_x": ("physical_size_x", "physical_size_y", "physical_size_z"),
}

#: Micrometres per unit, for the unit names found in microscopy files.
UNIT_TO_MICROMETRE = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "\\u00b5m": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "pm": 1e-6,
    "picometer": 1e-6,
    "å": 1e-4,  # OME-XML's angstrom
    "angstrom": 1e-4,
    "pixel": 1.0,  # ImageJ's "no calibration": sizes are taken as they are
}


_SIMPLE_KEYS = {"spacing", "unit", "axes", "channel", "study"}


def canonical_key(key: str) -> str:
    """Return the canonical spelling of a FuseMyCell metadata key.

    ``PhysicalSizeX``, ``physicalsizex``, ``physical_size_x`` and
    ``Physical Size X`` all become ``physical_size_x``; ``Spacing``, ``UNIT``,
    ``Axes``, ``Channel``, ``Study`` become lower case. Other keys are returned
    as they are.
    """
    squashed = re.sub(r"[\s_\-]", "", str(key)).lower()
    for axis in "xyz":
        if squashed == f"physicalsize{axis}":
            return f"physical_size_{axis}"
    if squashed in _SIMPLE_KEYS:
        return squashed
    return str(key)


def normalize_metadata(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Return ``raw`` with FuseMyCell keys in their canonical spelling.

    Keys that are not FuseMyCell keys are kept as they are, so no metadata is
    lost on a read-write round trip. When two spellings of the same key are
    present, the first one found wins.
    """
    normalised: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        normalised.setdefault(canonical_key(key), value)
    return normalised


def unit_scale_to_micrometre(unit: Any) -> float | None:
    """Micrometres per ``unit``, or ``None`` when the unit is unknown."""
    if unit is None:
        return 1.0
    name = str(unit).strip().lower().replace(" ", "")
    return UNIT_TO_MICROMETRE.get(name)


def as_positive_float(value: Any) -> float | None:
    """Parse a voxel size; ``None`` when it is missing, not a number or not > 0."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return number


@dataclass(frozen=True)
class OmeImage:
    """One ``Image`` of an OME-XML document: its name and the voxel sizes of its ``Pixels``."""

    name: str
    sizes: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """Axis (``x``, ``y``, ``z``) -> (value as written, unit as written; OME's default is um)."""


def ome_images(xml: str | None) -> list[OmeImage]:
    """The images of an OME-XML document in document order, with their ``PhysicalSize{X,Y,Z}`` and units.

    A document that does not parse gives an empty list (the caller then finds no voxel size
    there and says so); namespaces of every OME schema version are accepted.
    """
    if not xml:
        return []
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    images = []
    for image in root:
        if not image.tag.endswith("Image"):
            continue
        pixels = next((child for child in image if child.tag.endswith("Pixels")), None)
        sizes: dict[str, tuple[Any, str]] = {}
        if pixels is not None:
            for axis in "XYZ":
                value = pixels.attrib.get(f"PhysicalSize{axis}")
                if value not in (None, ""):
                    sizes[axis.lower()] = (value, pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm"))
        images.append(OmeImage(name=image.attrib.get("Name", ""), sizes=sizes))
    return images
