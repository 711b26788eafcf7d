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
    angle: np.ndarray, fused: np.ndarray, params: AugmentationParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same random flips, xy rotation and intensity scaling to both patches (ZYX)."""
    square = angle.shape[1] == angle.shape[2]
    if params.flip_xy:
        for axis in (1, 2):
            if rng.random() < 0.5:
                angle, fused = np.flip(angle, axis), np.flip(fused, axis)
    if params.flip_z and rng.random() < 0.5:
        angle, fused = np.flip(angle, 0), np.flip(fused, 0)
    if params.rotate_xy:
        turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
        if turns:
            angle, fused = np.rot90(angle, turns, axes=(1, 2)), np.rot90(fused, turns, axes=(1, 2))
    if params.intensity_scale is not None:
        factor = np.float32(rng.uniform(*params.intensity_scale))
        angle, fused = angle * factor, fused * factor
    return np.ascontiguousarray(angle), np.ascontiguousarray(fused)


class PatchDataset(Dataset):
    """``(input, target)`` tensors of shape ``(1, pz, py, px)`` from a :class:`PatchStore`.

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
    """

    def __init__(self, store: PatchStore | str, augmentation: AugmentationParams | None = None, seed: int = 0):
        self.store = store if isinstance(store, PatchStore) else PatchStore(store)
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws for a new epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        angle, fused = self.store[item]
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(item)])
            angle, fused = augment_pair(angle, fused, self.augmentation, rng)
        return torch.from_numpy(angle[None]), torch.from_numpy(fused[None])
