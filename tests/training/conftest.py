import numpy as np
import pandas as pd
import pytest

from fusemycell.patching.store import write_patch_store


def make_store(directory, count, seed, patch=(8, 16, 16)):
    """A small patch store whose target is a smoothed, brighter copy of the input (something to learn)."""
    rng = np.random.default_rng(seed)
    angles = rng.random((count, *patch)).astype(np.float32)
    targets = 0.5 * angles + 0.5 * np.roll(angles, 1, axis=-1) + 0.1
    index = pd.DataFrame(
        {
            "pair": "image_0_nucleus",
            "origin_z": 0,
            "origin_y": range(count),
            "origin_x": 0,
            "spacing_z_um": 1.0,
            "spacing_y_um": 0.5,
            "spacing_x_um": 0.5,
        }
    )
    write_patch_store(directory, index, patch, "float32", [(i, angles[i], targets[i]) for i in range(count)])
    return directory


@pytest.fixture
def stores(tmp_path):
    return make_store(tmp_path / "train", 6, seed=0), make_store(tmp_path / "val", 3, seed=1)
