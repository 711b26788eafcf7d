"""The memory an exact-tiled prediction takes: the network on a tile (measured) and the host's buffers (counted).

:func:`fusemycell.inference.tiling.exact_grid` plans the largest tiles whose sum fits ``inference.memory_gb``.
The network's part is measured for the model at hand (:func:`fusemycell.inference.predictor.network_bytes`);
the host's part is counted here from the buffers' shapes and element sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fusemycell import normalization

#: Share of ``memory_gb`` the exact tiling plans for; the rest is for the model's weights and the interpreter.
PLANNED_MEMORY_SHARE = 0.75

#: Output planes computed ahead of the file writer by a background thread (``inference.background_io``).
OUTPUT_PLANES_AHEAD = 16

#: Output planes in float32 in flight besides those: mapping to uint16, placing in the frame, and the two
#: planes interpolated back from a resampled grid.
FLOAT_PLANES_IN_FLIGHT = 5


@dataclass(frozen=True)
class HostLoad:
    """What the host holds around the network while it streams a volume (see :func:`host_bytes`)."""

    in_channels: int = 1
    """Network input channels (the single view, then position channels)."""
    flips: int = 1
    """Flip sets averaged (test-time augmentation: 4); more than one keeps a flipped copy of each batch."""
    read_ratio: float = 1.0
    """Source voxels read per network voxel (above 1 when the model's grid is coarser than the file's)."""
    resampled: bool = False
    """Whether the source is interpolated onto the network's grid (temporaries while reading)."""
    output_plane: int | None = None
    """Voxels of a plane of the written output (the file's grid); None: the network's plane."""
    raw_width: int | None = None
    """Voxels of a row of the file; None: the network's row."""
    pinned: bool = False
    """Whether each batch goes through page-locked buffers (CUDA): one in, two out."""
    raw_itemsize: int = 4
    """Bytes of an item of the file read (uint16: 2); 4, the most, when unknown."""
    planes_ahead: int = OUTPUT_PLANES_AHEAD
    """Output planes computed ahead of the writer (0 without background I/O); two more are in hand."""
    output_itemsize: int = 2
    """Bytes of an item of the written output (uint16)."""


def host_bytes(shape: Sequence[int], core_z: int, tile: Sequence[int], load: HostLoad = HostLoad()) -> float:
    """Host memory (bytes) of exact streaming, besides the network: what :func:`exact_grid` plans with.

    Counted from the buffers' shapes and element sizes. Per voxel of the tile read (``C`` channels,
    float32 unless said):

    * in hand: the tile waiting for a batch, the next tile, their stacked batch (and with flips its
      flipped copy), and with pinned buffers the batch in and the prediction out twice;
    * being read in the background: the raw box (``raw_itemsize`` an item, ``read_ratio`` voxels per
      voxel) and its normalised copy, when resampled the interpolation's temporaries, and with position
      channels the channels and their concatenation; plus a raw plane's rows of the tile, twice.
      Normalising takes two float32 temporaries of the box, or of a chunk of
      :data:`fusemycell.normalization.NORMALIZE_CHUNK_VOXELS` when the box is larger.

    Per plane: the row of output planes being predicted (``core_z`` float32 planes of the network's
    grid) and the writer's: ``planes_ahead`` and two in hand of ``output_itemsize``, and
    :data:`FLOAT_PLANES_IN_FLIGHT` in float32, per voxel of an output plane.
    """
    plane = int(shape[1]) * int(shape[2])
    voxels = int(tile[0]) * int(tile[1]) * int(tile[2])
    channels = load.in_channels
    in_hand = (3 + (load.flips > 1)) * 4 * channels + (4 * channels + 8 if load.pinned else 0)
    ratio = max(1.0, load.read_ratio)
    reading = ratio * (load.raw_itemsize + 4) + (ratio * 8 + 4 if load.resampled else 0)
    if channels > 1:
        reading += 4 * (channels - 1) + 4 * channels
    raw_rows = 2 * load.raw_itemsize * ratio * int(tile[1]) * (load.raw_width or int(shape[2]))
    normalising = 2 * 4 * min(float(normalization.NORMALIZE_CHUNK_VOXELS), ratio * voxels)
    writer = (load.planes_ahead + 2) * load.output_itemsize + FLOAT_PLANES_IN_FLIGHT * 4
    return (
        4.0 * core_z * plane
        + (in_hand + reading) * voxels
        + raw_rows
        + normalising
        + writer * (load.output_plane or plane)
    )


def planned_bytes(
    shape: Sequence[int], core_z: int, tile: Sequence[int], load: HostLoad, network_bytes_per_voxel: float
) -> tuple[float, float]:
    """``(host, network)`` bytes :func:`exact_grid` counts for a tiling: :func:`host_bytes` and the network's tile."""
    return host_bytes(shape, core_z, tile, load), network_bytes_per_voxel * int(tile[0]) * int(tile[1]) * int(tile[2])
