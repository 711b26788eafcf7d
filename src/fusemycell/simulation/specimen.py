"""Synthetic specimens: an embryo-like body packed with cells.

Cells are the Voronoi regions of random centres inside an ellipsoidal body.
The ``nucleus`` channel labels a textured ellipsoid around each centre; the
``membrane`` channel labels the thin shells where neighbouring cells meet
(where the distances to the two nearest centres are equal) and the body surface.
All sizes are physical (micrometres) so a specimen looks the same at any
voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from fusemycell.simulation.config import SpecimenParams


@dataclass(frozen=True)
class Specimen:
    """Fluorophore density on the voxel grid, and the tissue it sits in."""

    density: np.ndarray
    """Label concentration, float32, ZYX; a mean cell is about 1."""
    tissue: np.ndarray
    """Boolean ZYX mask of the body: where light is scattered and absorbed."""
    cell_centres_um: np.ndarray
    """``(n, 3)`` cell centres in micrometres (z, y, x)."""


def _grid_um(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Broadcastable voxel-centre coordinates in micrometres."""
    return [
        (np.arange(n, dtype=np.float32) * s).reshape([-1 if i == axis else 1 for i in range(3)])
        for axis, (n, s) in enumerate(zip(shape, spacing))
    ]


def smooth_noise(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], scale_um: float, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian random field with unit variance and correlation length ``scale_um``."""
    white = rng.standard_normal(shape).astype(np.float32)
    field = ndimage.gaussian_filter(white, sigma=[scale_um / s for s in spacing], mode="wrap")
    std = float(field.std())
    return field / std if std > 0 else field


def _body_mask(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    params: SpecimenParams,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The body: an ellipsoid with a slightly wobbly surface, off-centre by a little."""
    extent = np.array(shape) * np.array(spacing)
    centre = extent / 2 + rng.uniform(-0.04, 0.04, 3) * extent
    semi_axes = np.array(params.body_semi_axes_fraction) * extent
    z, y, x = _grid_um(shape, spacing)
    radius = np.sqrt(
        ((z - centre[0]) / semi_axes[0]) ** 2
        + ((y - centre[1]) / semi_axes[1]) ** 2
        + ((x - centre[2]) / semi_axes[2]) ** 2
    )
    wobble = 0.05 * smooth_noise(shape, spacing, float(semi_axes.min()) / 2, rng)
    return radius + wobble <= 1.0, centre, semi_axes


def _cell_centres(
    centre: np.ndarray, semi_axes: np.ndarray, params: SpecimenParams, rng: np.random.Generator
) -> np.ndarray:
    """Random centres inside the body, kept apart like packed cells (dart throwing)."""
    body_volume = 4 / 3 * np.pi * float(np.prod(semi_axes))
    cell_volume = np.pi / 6 * params.cell_diameter_um**3
    wanted = max(2, int(round(body_volume / cell_volume)))
    min_distance = 0.7 * params.cell_diameter_um
    accepted: list[np.ndarray] = []
    for _ in range(wanted * 40):
        direction = rng.uniform(-1, 1, 3)
        if np.sum(direction**2) > 1:
            continue
        point = centre + direction * semi_axes * 0.95
        if all(np.sum((point - other) ** 2) >= min_distance**2 for other in accepted):
            accepted.append(point)
            if len(accepted) == wanted:
                break
    return np.array(accepted, dtype=np.float32)


def make_specimen(
    channel: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    params: SpecimenParams,
    rng: np.random.Generator,
) -> Specimen:
    """Draw a specimen for ``channel`` (``"nucleus"`` or ``"membrane"``).

    Parameters
    ----------
    channel
        Which structure is labelled.
    shape, spacing
        Voxel grid (z, y, x) and voxel size in micrometres.
    params
        Sizes, brightness spread and texture of the cells.
    rng
        Random stream; the same stream gives the same specimen.
    """
    if channel not in ("nucleus", "membrane"):
        raise ValueError(f"unknown channel {channel!r}; expected 'nucleus' or 'membrane'")
    tissue, centre, semi_axes = _body_mask(shape, spacing, params, rng)
    centres = _cell_centres(centre, semi_axes, params, rng)
    n_cells = len(centres)
    brightness = rng.lognormal(0.0, params.brightness_spread, n_cells).astype(np.float32)
    texture = 1 + params.texture_strength * smooth_noise(shape, spacing, params.texture_scale_um, rng)

    inside = np.nonzero(tissue)
    points = np.stack([inside[a] * np.float32(spacing[a]) for a in range(3)], axis=1)
    distances, nearest = cKDTree(centres).query(points, k=2)

    density = np.zeros(shape, dtype=np.float32)
    if channel == "nucleus":
        density[inside] = _nuclei(points, centres, nearest[:, 0], brightness, spacing, params, rng)
    else:
        density[inside] = _membranes(points, centres, distances, nearest, brightness, spacing, params)
        # the outer surface of the body is a membrane too
        surface = tissue & ~ndimage.binary_erosion(tissue)
        density[surface] = np.maximum(density[surface], 0.5 * float(np.median(brightness)))
    density *= texture.clip(0.2, None)
    density[tissue] += params.autofluorescence
    return Specimen(density=density.astype(np.float32), tissue=tissue, cell_centres_um=centres)


def _nuclei(
    points: np.ndarray,
    centres: np.ndarray,
    owner: np.ndarray,
    brightness: np.ndarray,
    spacing: tuple[float, float, float],
    params: SpecimenParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Density at ``points`` of ellipsoidal nuclei of varied size and elongation, soft-edged over ~1 voxel."""
    n_cells = len(centres)
    radii = 0.5 * params.cell_diameter_um * params.nucleus_fraction
    radii = radii * rng.lognormal(0.0, params.nucleus_size_spread, n_cells)
    elongation = rng.uniform(0.8, 1.25, (n_cells, 3))
    offset = (points - centres[owner]) / elongation[owner]
    scaled = np.sqrt(np.sum(offset**2, axis=1)) / radii[owner]
    edge = min(spacing) / radii[owner]
    profile = 1 / (1 + np.exp((scaled - 1) / np.maximum(edge, 1e-3)))
    return brightness[owner] * profile


def _membranes(
    points: np.ndarray,
    centres: np.ndarray,
    distances: np.ndarray,
    nearest: np.ndarray,
    brightness: np.ndarray,
    spacing: tuple[float, float, float],
    params: SpecimenParams,
) -> np.ndarray:
    """Density at ``points`` of cell membranes.

    A shell where a voxel is (almost) as close to its second cell as to its first; its profile is
    widened by the voxel footprint along the shell normal, so thin membranes survive coarse z
    sampling instead of aliasing away between planes.
    """
    if len(centres) < 2:  # one cell (a tiny volume): no wall between cells, only the body's surface
        return np.zeros(len(points), dtype=np.float32)
    half_gap = 0.5 * (distances[:, 1] - distances[:, 0])
    normal = centres[nearest[:, 1]] - centres[nearest[:, 0]]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-6
    footprint = np.sqrt(np.sum((normal * (np.asarray(spacing, np.float32) / 2)) ** 2, axis=1))
    sigma = params.membrane_thickness_um / 2.355
    sigma_eff = np.sqrt(sigma**2 + footprint**2)
    shell = (sigma / sigma_eff) * np.exp(-0.5 * (half_gap / sigma_eff) ** 2)
    return 0.5 * (brightness[nearest[:, 0]] + brightness[nearest[:, 1]]) * shell
