import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from fusemycell.patching.config import AugmentationParams
from fusemycell.patching.store import PatchStore, write_patch_store
from fusemycell.patching.torch_dataset import PatchDataset, augment_pair
from fusemycell.position import PositionChannels
from tests.patching.conftest import position_store, textured_ellipsoid


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


# --- position channels -----------------------------------------------------------------------------------

SPACING = (1.0, 0.5, 0.5)
ORIGINS = [(0, 0, 0), (4, 16, 8), (2, 8, 20)]


@pytest.fixture
def position_dir(tmp_path):
    return position_store(tmp_path / "s", textured_ellipsoid((12, 40, 36), seed=21), SPACING, ORIGINS, (8, 16, 16))


def test_inputs_carry_the_position_channels_after_the_single_view(position_dir):
    dataset = PatchDataset(position_dir)
    store = PatchStore(position_dir)
    field = store.position_field("image_0_nucleus")
    for item, origin in enumerate(ORIGINS):
        x, y = dataset[item]
        assert x.shape == (4, 8, 16, 16) and y.shape == (1, 8, 16, 16) and x.dtype == torch.float32
        np.testing.assert_array_equal(x[0].numpy(), store[item][0])
        np.testing.assert_array_equal(x[1:].numpy(), field.region(origin, (8, 16, 16)))
    # with the physics geometry too: it stays a separate third tensor
    x, y, geometry = PatchDataset(position_dir, geometry=True)[1]
    assert x.shape == (4, 8, 16, 16) and geometry.shape == (3, 8, 16, 16)
    assert geometry[2].unique().tolist() == [0.5]


def test_a_store_without_position_gives_single_channel_inputs(tmp_path):
    directory = position_store(
        tmp_path / "s",
        textured_ellipsoid((12, 40, 36)),
        SPACING,
        ORIGINS,
        (8, 16, 16),
        position=PositionChannels(enabled=False),
    )
    x, _ = PatchDataset(directory)[0]
    assert x.shape == (1, 8, 16, 16)


def _transforms():
    """Every flip/rotation augment_pair can apply to a (C, z, y, x) array, with a name."""
    for flip_z in (False, True):
        for flip_y in (False, True):
            for flip_x in (False, True):
                for turns in range(4):

                    def apply(a, fz=flip_z, fy=flip_y, fx=flip_x, k=turns):
                        if fy:
                            a = np.flip(a, -2)
                        if fx:
                            a = np.flip(a, -1)
                        if fz:
                            a = np.flip(a, -3)
                        return np.rot90(a, k, axes=(-2, -1))

                    yield (flip_z, flip_y, flip_x, turns), apply


def test_augmentation_moves_the_position_channels_with_the_single_view(position_dir):
    params = AugmentationParams(flip_xy=True, rotate_xy=True, flip_z=True, intensity_scale=(0.5, 2.0))
    plain = PatchDataset(position_dir)
    seen = set()
    for seed in range(12):
        augmented = PatchDataset(position_dir, params, seed=seed)
        for item in range(len(ORIGINS)):
            x0, y0 = (t.numpy() for t in plain[item])
            x, y = (t.numpy() for t in augmented[item])
            # the transform that maps the plain view onto the augmented one (the texture makes it unique)
            matches = []
            for name, apply in _transforms():
                moved = apply(x0[0])
                if moved.shape == x[0].shape:
                    factor = float(x[0].ravel() @ moved.ravel() / (moved.ravel() @ moved.ravel()))
                    if np.allclose(x[0], factor * moved, rtol=1e-5, atol=1e-6):
                        matches.append((name, apply, factor))
            assert matches, "the augmented view is no flip/rotation of the plain one"
            name, apply, factor = matches[0]
            seen.add(name)
            assert 0.5 <= factor <= 2.0
            # the position channels moved exactly the same way, without intensity scaling
            np.testing.assert_allclose(x[1:], apply(x0[1:]), atol=1e-6)
            np.testing.assert_allclose(y, factor * apply(y0), rtol=1e-5, atol=1e-6)
    assert len(seen) > 4  # several different transforms were exercised
