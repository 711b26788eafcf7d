"""Predicting a whole volume with the model's tiling: exact for tile-invariant networks, else blended.

:func:`predict_volume` returns a sequential array-like (:mod:`fusemycell.inference.streams`) that
predicts planes on demand; :func:`predict_whole_volume` is the same prediction of an in-memory
single view, what training's whole-volume validation and the guard score (bound with
:func:`functools.partial` to the inference tiling by the training pipeline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fusemycell.inference.backends import Backend, FlipAveraging, TorchBackend
from fusemycell.inference.streams import ExactPrediction, StreamingPrediction, StreamOptions
from fusemycell.inference.tiling import HostLoad, TileSettings, exact_grid
from fusemycell.models.card import ModelCard
from fusemycell.models.config import UNetConfig
from fusemycell.models.receptive_field import halo as receptive_halo
from fusemycell.position import PositionField

#: How :func:`predict_volume` runs by default.
PREDICTION = StreamOptions(description="prediction")


class TilingError(ValueError):
    """The requested tiling cannot be used with this model; the message says what to set instead."""


def network_bytes_per_voxel(architecture: UNetConfig, element_bytes: int) -> float:
    """Approximate peak memory of one forward pass per voxel of its input (inference, no gradients).

    About seven feature maps of the full-resolution width live at once (the skip, the upsampled
    features, their concatenation, a convolution's output), plus the float32 input and output:
    measured 245 bytes (float32) and 132 (bf16) for 8 base channels, 839 (float32) for 32.
    """
    return element_bytes * (7 * architecture.channels(0) + 2 * architecture.in_channels) + 8


def element_bytes(backend: Any) -> int:
    """Bytes of an activation element in ``backend``: 2 under bf16/fp16 autocast, else 4."""
    precision = getattr(backend, "precision", None)
    return 2 if precision is not None and precision.enabled else 4


def _device_bytes(backend: Any) -> float | None:
    """On a GPU, the memory a tile may take there (half the free memory); None on the host."""
    device = getattr(backend, "device", None)
    if device is None or device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return 0.5 * free


def host_load(source: Any, architecture: UNetConfig, flips: int, backend: Any) -> HostLoad:
    """What streaming ``source`` holds on the host: from its transform when it is a preprocessed file."""
    device = getattr(backend, "device", None)
    pinned = device is not None and device.type == "cuda"
    transform = getattr(source, "transform", None)
    if transform is None:  # an array on the network's grid
        return HostLoad(in_channels=architecture.in_channels, flips=flips, pinned=pinned)
    original, cropped, output = transform.original_shape, transform.cropped_shape, transform.output_shape
    return HostLoad(
        in_channels=architecture.in_channels,
        flips=flips,
        read_ratio=math.prod(cropped) / max(1, math.prod(output)),
        resampled=transform.output_spacing_zyx is not None,
        output_plane=int(original[1]) * int(original[2]),
        raw_width=int(original[2]),
        pinned=pinned,
    )


def resolve_tiling(architecture: UNetConfig, settings: TileSettings) -> str:
    """``exact`` or ``blend`` for this model: ``auto`` picks exact for tile-invariant networks."""
    if settings.mode == "blend":
        return "blend"
    if settings.mode == "exact" and not architecture.tile_invariant:
        raise TilingError(
            f"inference.tiling is exact, but this model normalises every tile by its own statistics "
            f"(normalization: {architecture.normalization}), so its prediction depends on how the volume is cut; "
            "use inference.tiling: blend (or auto), or a model trained with normalization: none"
        )
    return "exact" if architecture.tile_invariant else "blend"


def predict_volume(
    source: Any,
    backend: Backend,
    architecture: UNetConfig,
    settings: TileSettings,
    *,
    blend_tile: Sequence[int],
    position: PositionField | None = None,
    options: StreamOptions = PREDICTION,
) -> StreamingPrediction | ExactPrediction:
    """The sequential array-like prediction of ``source`` (normalised, ZYX) with the model's tiling.

    Exact tiling (:func:`resolve_tiling`) for tile-invariant networks: tiles planned from
    ``settings.memory_gb`` (or ``settings.tile_zyx``), the result equal to whole-volume prediction.
    Blending otherwise, with ``settings.tile_zyx`` or ``blend_tile`` (the card's tile).
    """
    tta = FlipAveraging(backend) if settings.tta else None
    if resolve_tiling(architecture, settings) == "blend":
        tiling = replace(settings, tile_zyx=tuple(settings.tile_zyx or blend_tile))
        return StreamingPrediction(source, tta or backend, tiling, position=position, options=options)
    grid = exact_grid(
        tuple(int(s) for s in source.shape),
        halo=receptive_halo(architecture),
        multiple=architecture.size_multiple,
        settings=settings,
        load=host_load(source, architecture, len(tta.flip_sets) if tta is not None else 1, backend),
        network_bytes_per_voxel=network_bytes_per_voxel(architecture, element_bytes(backend)),
        device_bytes=_device_bytes(backend),
    )
    return ExactPrediction(
        source,
        backend,
        grid,
        flip_sets=tta.flip_sets if tta is not None else ((),),
        batch_size=1 if grid.planned else settings.batch_size,
        position=position,
        options=options,
    )


def read_all(stream: Any) -> np.ndarray:
    """Every plane of a sequential array-like, as one float32 array."""
    output = np.empty(tuple(stream.shape), dtype=np.float32)
    for z in range(output.shape[0]):
        output[z] = stream[z]
    return output


def predict_array(
    volume: np.ndarray,
    backend: Backend,
    tiling: TileSettings,
    *,
    position: PositionField | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Sliding-window prediction of an in-memory (normalised) volume, float32 (``position``: its field).

    ``tiling`` gives the tile (``tile_zyx``, set), the overlap and the tiles per network call.
    """
    stream = StreamingPrediction(
        np.asarray(volume, dtype=np.float32),
        backend,
        tiling,
        position=position,
        options=StreamOptions(progress=progress),
    )
    return read_all(stream)  # filled plane by plane: one copy of the result


def predict_whole_volume(
    network: torch.nn.Module,
    card: ModelCard,
    single_view: np.ndarray,
    position: PositionField | None,
    device: str | torch.device,
    *,
    tiling: TileSettings,
    amp: bool = True,
) -> np.ndarray:
    """The float32 prediction of a whole (normalised) single view as inference makes it, on ``device``.

    ``tiling`` and ``amp`` are the inference settings: bound with :func:`functools.partial`, this is
    the prediction function training's whole-volume validation and the guard are given (a partial
    of a module-level function pickles, for spawned DDP workers). The card's tiling: exact for
    tile-invariant networks, else blended tiles of ``tiling.tile_zyx`` or the card's tile.
    """
    backend = TorchBackend(network, str(device), amp=amp)
    stream = predict_volume(
        single_view,
        backend,
        card.architecture,
        tiling,
        blend_tile=tiling.tile_zyx or card.default_tile_zyx,
        position=position,
        options=StreamOptions(progress=False),  # every epoch: its log line says enough
    )
    return read_all(stream)
