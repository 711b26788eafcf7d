"""A content fingerprint of a volume that costs three planes: which file is this, whatever its name?

Two acquisitions that share a file name (``image_0_nucleus_angle.tif`` exists in the synthetic
folder and in most real ones) differ in their voxels. The digest hashes the shape, the voxel
type and the first, middle and last z-planes, so checking that a run reads the files another
run was made from costs three planes per file (:func:`content_digest`), and a pass that reads
every slab anyway computes it on the way (:class:`ContentDigest`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fusemycell.io.formats import read_volume


class ContentDigest:
    """Builds the digest from planes given in increasing z (the planes of :attr:`planes` only)."""

    def __init__(self, shape: Sequence[int], dtype: Any):
        self.shape = tuple(int(s) for s in shape)
        depth = self.shape[0]
        self.planes = sorted({0, depth // 2, depth - 1})
        """The z indices that enter the digest."""
        self._hash = hashlib.sha256(f"{self.shape}|{np.dtype(dtype).str}".encode())
        self._next = 0

    def add_slab(self, z0: int, slab: np.ndarray) -> None:
        """Feed the planes of :attr:`planes` that fall in ``slab`` (planes ``z0 ... z0 + len(slab) - 1``)."""
        while self._next < len(self.planes) and z0 <= self.planes[self._next] < z0 + len(slab):
            self._hash.update(np.ascontiguousarray(slab[self.planes[self._next] - z0]).tobytes())
            self._next += 1

    def hexdigest(self) -> str:
        """``sha256:<16 hex digits>``."""
        if self._next != len(self.planes):
            raise ValueError(f"digest incomplete: planes {self.planes[self._next :]} were not given")
        return f"sha256:{self._hash.hexdigest()[:16]}"


def content_digest(path: str | os.PathLike) -> str:
    """The digest of ``path``, reading only its first, middle and last planes.

    Raises
    ------
    VolumeFormatError
        When the file cannot be read (naming it).
    """
    data = read_volume(path, lazy=True).data
    try:
        digest = ContentDigest(data.shape, data.dtype)
        for z in digest.planes:
            digest.add_slab(z, data[z : z + 1])
    finally:
        close = getattr(data, "close", None)
        if close is not None:
            close()
    return digest.hexdigest()
