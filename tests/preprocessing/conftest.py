import numpy as np
import pytest

from fusemycell.io.tiff import write_volume


@pytest.fixture
def make_volume(tmp_path):
    """Write a small uint16 volume with a bright block and return its path."""

    def make(name, *, shape=(10, 32, 30), spacing=(2.0, 0.4, 0.4), value=None, metadata=None, seed=0):
        rng = np.random.default_rng(seed)
        if value is not None:
            data = np.full(shape, value, dtype=np.float32)
        else:
            data = (rng.gamma(2.0, 50.0, shape) + 100).astype(np.float32)
            data[shape[0] // 3 : 2 * shape[0] // 3, 8:20, 6:18] += 2000
        dtype = np.float32 if np.isnan(data).any() else np.uint16
        return write_volume(tmp_path / name, data.astype(dtype), spacing, metadata or {})

    return make
