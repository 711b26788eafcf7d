"""PyTorch dataset over a patch store, with paired augmentation.

Every random transform is drawn once per sample and applied to the input
(angle) and the target (fused) alike, so they stay voxel-aligned.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.store import PatchStore


def augment_pair(
    angle: np.ndarray,
    fused: np.ndarray,
    params: AugmentationParams,
    rng: np.random.Generator,
    extra: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Apply the same random flips, xy rotation and intensity scaling to both patches (ZYX).

    ``extra`` (``(channels, z, y, x)``, e.g. per-voxel depth maps) gets the same
    flips and rotation but no intensity scaling.
    """
    arrays = [angle, fused] + ([extra] if extra is not None else [])
    square = angle.shape[1] == angle.shape[2]
    if params.flip_xy:
        for axis in (-2, -1):
            if rng.random() < 0.5:
                arrays = [np.flip(a, axis) for a in arrays]
    if params.flip_z and rng.random() < 0.5:
        arrays = [np.flip(a, -3) for a in arrays]
    if params.rotate_xy:
        turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if turns:
            arrays = [np.rot90(a, turns, axes=(-2, -1)) for a in arrays]
    if params.intensity_scale is not None:
        factor = np.float32(rng.uniform(*params.intensity_scale))
        arrays[0], arrays[1] = arrays[0] * factor, arrays[1] * factor
    arrays = [np.ascontiguousarray(a) for a in arrays]
    return arrays[0], arrays[1], (arrays[2] if extra is not None else None)


def patch_geometry(
    origin_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float], patch_size: tuple[int, ...]
) -> np.ndarray:
    """Per-voxel ``(depth along z, depth along x, lateral voxel size)`` in micrometres, ``(3, z, y, x)``.

    Depths are measured from the first plane (z) and first column (x) of the
    preprocessed volume: the detection and illumination entry faces.
    """
    pz, py, px = patch_size
    depth_z = (origin_zyx[0] + np.arange(pz, dtype=np.float32) + 0.5) * np.float32(spacing_zyx[0])
    depth_x = (origin_zyx[2] + np.arange(px, dtype=np.float32) + 0.5) * np.float32(spacing_zyx[2])
    geometry = np.empty((3, pz, py, px), dtype=np.float32)
    geometry[0] = depth_z[:, None, None]
    geometry[1] = depth_x[None, None, :]
    geometry[2] = np.float32(spacing_zyx[2])
    return geometry


class PatchDataset(Dataset):
    """``(input, target)`` tensors from a :class:`PatchStore`: input ``(1 + P, pz, py, px)``, target ``(1, ...)``.

    The input is the single view followed by the store's ``P`` position channels
    (:mod:`fusemycell.position`; none for a store without them), taken from each volume's
    field at the patch's place, exactly as inference computes them for a tile.

    With ``data_range=True`` the next tensor (a scalar) is SSIM's data range of the patch's volume on
    the challenge's normalised scale (``data_range`` of the store's index; NaN for a store without it):
    the training loss then weighs SSIM as the metric does on the whole volume.

    With ``geometry=True`` the last tensor ``(3, pz, py, px)`` holds each voxel's
    depths along z and x and the lateral voxel size (see :func:`patch_geometry`),
    transformed with the patch, for the physics-informed loss.

    Safe with several DataLoader workers: each worker opens its own memory maps
    and draws augmentations from a stream seeded by ``seed``, the epoch and the
    sample index, so runs are reproducible whatever the number of workers.

    Parameters
    ----------
    store
        The patch store (or its folder).
    augmentation
        Augmentation settings; ``None`` for none (validation).
    seed
        Base seed of the augmentation streams.
    geometry
        Also return the per-voxel geometry (needs spacing columns in the store's index).
    data_range
        Also return the volume's SSIM data range.
    """

    def __init__(
        self,
        store: PatchStore | str,
        augmentation: AugmentationParams | None = None,
        seed: int = 0,
        geometry: bool = False,
        data_range: bool = False,
    ):
        self.store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0
        self.geometry = geometry
        self.data_range = data_range
        index = self.store.index
        self._ranges = (
            index["data_range"].to_numpy(np.float32) if "data_range" in index.columns else np.full(len(index), np.nan)
        )
        self.positions = self.store.position.count
        if geometry:
            missing = {"spacing_z_um", "spacing_y_um", "spacing_x_um"} - set(self.store.index.columns)
            if missing:
                raise ValueError(
                    f"{self.store.directory}: index.csv lacks {sorted(missing)}; re-run the patching pipeline"
                )

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, ...]:
        angle, fused = self.store[item]
        extras = []
        row = self.store.index.iloc[int(item)] if (self.geometry or self.positions) else None
        if self.positions:
            origin = (int(row.origin_z), int(row.origin_y), int(row.origin_x))
            extras.append(self.store.position_field(str(row.pair)).region(origin, self.store.patch_size_zyx))
        if self.geometry:
            extras.append(
                patch_geometry(
                    (int(row.origin_z), int(row.origin_y), int(row.origin_x)),
                    (float(row.spacing_z_um), float(row.spacing_y_um), float(row.spacing_x_um)),
                    self.store.patch_size_zyx,
                )
            )
        extra = np.concatenate(extras) if extras else None
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(item)])
            angle, fused, extra = augment_pair(angle, fused, self.augmentation, rng, extra)
        # copies: the store's memory maps are read-only, and a batch must not pin them
        network_input = angle[None]
        if self.positions:
            network_input = np.concatenate([network_input, extra[: self.positions]])
        tensors: tuple[torch.Tensor, ...] = (torch.tensor(network_input), torch.tensor(fused[None]))
        if self.data_range:
            tensors += (torch.tensor(self._ranges[int(item)], dtype=torch.float32),)
        if self.geometry:
            tensors += (torch.from_numpy(np.ascontiguousarray(extra[self.positions :])),)
        return tensors
