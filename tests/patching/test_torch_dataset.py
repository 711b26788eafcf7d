import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.store import write_patch_store
from fusemycell.patching.torch_dataset import PatchDataset, augment_pair


@pytest.fixture
def store_dir(tmp_path):
    rng = np.random.default_rng(0)
    angles = rng.random((6, 4, 8, 8)).astype(np.float32)
    index = pd.DataFrame({"pair": ["p"] * 6, "origin_z": range(6), "origin_y": 0, "origin_x": 0})
    # the target is a voxel-wise function of the input: alignment is checkable after any transform
    write_patch_store(
        tmp_path / "s", index, (4, 8, 8), "float32", [(i, angles[i], 3 * angles[i] + 1) for i in range(6)]
    )
    return tmp_path / "s"


@pytest.mark.parametrize("square", [True, False])
def test_augmentations_keep_input_and_target_aligned(square):
    rng = np.random.default_rng(0)
    angle = rng.random((4, 8, 8 if square else 6)).astype(np.float32)
    target = 3 * angle + 1
    params = AugmentationParams(flip_xy=True, rotate_xy=True, flip_z=True, intensity_scale=(0.5, 2.0))
    seen_shapes = set()
    for seed in range(30):
        a, t, _ = augment_pair(angle, target, params, np.random.default_rng(seed))
        factor = (t - 3 * a) / 1.0  # t = s * (3x + 1), a = s * x  ->  t - 3a = s
        np.testing.assert_allclose(factor, factor.flat[0], rtol=1e-5)
        assert 0.5 <= factor.flat[0] <= 2.0
        seen_shapes.add(a.shape)
        assert sorted(a.ravel() / factor.flat[0]) == pytest.approx(sorted(angle.ravel()), rel=1e-5)  # a permutation
    assert seen_shapes == ({(4, 8, 8)} if square else {(4, 8, 6)})  # non-square patches keep their shape


def test_dataset_gives_channel_first_tensors_and_is_reproducible(store_dir):
    dataset = PatchDataset(store_dir, AugmentationParams(), seed=5)
    x, y = dataset[2]
    assert x.shape == y.shape == (1, 4, 8, 8) and x.dtype == torch.float32
    assert torch.equal(PatchDataset(store_dir, AugmentationParams(), seed=5)[2][0], x)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2][0], x)
    plain = PatchDataset(store_dir)[2]
    assert torch.allclose(plain[1], 3 * plain[0] + 1)


def test_dataloader_with_worker_processes(store_dir):
    dataset = PatchDataset(store_dir, AugmentationParams(intensity_scale=None), seed=1)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2))
    inputs = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    assert inputs.shape == (6, 1, 4, 8, 8)
    assert torch.allclose(targets, 3 * inputs + 1, atol=1e-5)
    single = torch.cat([b[0] for b in DataLoader(dataset, batch_size=4, num_workers=0)])
    assert torch.equal(single, inputs)  # the same draws whatever the number of workers
