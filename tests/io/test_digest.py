"""fusemycell.io.digest: same voxels same digest, whatever the name; the slab pass agrees with the three-plane read."""

import numpy as np
import pytest

from fusemycell.io.digest import ContentDigest, content_digest
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume


def _write(path, data):
    save_volume(path, Volume(data, (1.0, 0.5, 0.5), {"channel": "nucleus"}))
    return path


def test_digest_tells_files_apart_by_content_not_name(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (9, 12, 12)).astype(np.uint16)
    first = content_digest(_write(tmp_path / "a.tif", data))
    assert content_digest(_write(tmp_path / "b.tif", data)) == first  # same voxels, other name
    changed = data.copy()
    changed[4, 3, 3] += 1  # the middle plane
    assert content_digest(_write(tmp_path / "a.tif", changed)) != first


def test_the_slab_pass_gives_the_same_digest(tmp_path):
    data = np.random.default_rng(1).integers(0, 1000, (10, 8, 8)).astype(np.uint16)
    digest = ContentDigest(data.shape, data.dtype)
    for z0 in range(0, 10, 3):
        digest.add_slab(z0, data[z0 : z0 + 3])
    assert digest.hexdigest() == content_digest(_write(tmp_path / "v.tif", data))


def test_an_incomplete_digest_is_an_error():
    digest = ContentDigest((5, 4, 4), np.uint16)
    digest.add_slab(0, np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(ValueError, match="digest incomplete"):
        digest.hexdigest()
