"""Predicting a whole volume with the model's tiling: exact for tile-invariant networks, else blended.

:func:`predict_volume` returns a sequential array-like (:mod:`fusemycell.inference.streams`) that
predicts planes on demand; :func:`predict_whole_volume` is the same prediction of an in-memory
single view, what training's whole-volume validation and the guard score (bound with
:func:`functools.partial` to the inference tiling by the training pipeline).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from fusemycell import memory
from fusemycell.errors import Setting, UserError
from fusemycell.inference.backends import Backend, FlipAveraging, TorchBackend
from fusemycell.inference.memory_plan import OUTPUT_PLANES_AHEAD, HostLoad, planned_bytes
from fusemycell.inference.streams import ExactPrediction, StreamingPrediction, StreamOptions
from fusemycell.inference.tiling import HaloGrid, TileSettings, check_blend_tiling, exact_grid
from fusemycell.models.card import ModelCard
from fusemycell.models.config import UNetConfig
from fusemycell.models.receptive_field import halo as receptive_halo
from fusemycell.position import PositionField

#: How :func:`predict_volume` runs by default.
PREDICTION = StreamOptions(description="prediction")


class TilingError(UserError):
    """The requested tiling cannot be used with this model; the message says what to set instead."""


#: Measured network memory, by model (the network object, or the backend that has none: ONNX Runtime),
#: then by device, element type, input channels and tiles: measured once, forgotten with the model.
_MEASURED: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], int]] = weakref.WeakKeyDictionary()

#: Calls of a rehearsal (:func:`network_bytes`) on glibc's own heap: it keeps what one call freed and
#: the next call's buffers do not all fit in it, so the resident set grows over the first calls of a
#: stream (about twice one call's peak, measured with the ``mac`` network) and then levels off.
REHEARSAL_CALLS = 8

#: Calls of a rehearsal on the steady heap (:func:`fusemycell.memory.steady_heap`), where the resident set
#: follows the live memory: two, the first on a new shape setting up its kernels. A rehearsal is several
#: tiles' work: on a small volume, eight calls took longer than the prediction.
STEADY_REHEARSAL_CALLS = 2


def rehearsal_calls(settings: TileSettings) -> int:
    """The calls of a rehearsal under ``settings``: fewer where the heap is steady."""
    return STEADY_REHEARSAL_CALLS if settings.steady_heap and memory.steady_heap() else REHEARSAL_CALLS


def planned_network_bytes(backend: Any, grid: HaloGrid, in_channels: int, settings: TileSettings) -> int:
    """The network's part of the memory plan of ``grid`` (planned by :func:`plan_exact`: measured, cached)."""
    return network_bytes(backend, tile_shapes(grid), in_channels, rehearsal_calls(settings))


def plan_bytes(grid: HaloGrid, load: HostLoad, backend: Any, in_channels: int, settings: TileSettings) -> float:
    """The memory the plan of ``grid`` counts, bytes: the host's buffers for ``load`` and the network as
    :func:`plan_exact` measured it (cached with the model: no second measurement)."""
    host, _ = planned_bytes(grid.shape, grid.core[0], grid.tile, load, 0)
    return host + planned_network_bytes(backend, grid, in_channels, settings)


#: A plan whose tiles, measured, take more than this share over the bytes per voxel it was planned with,
#: or less than its inverse (and that cuts the volume), is planned again with the measured value.
REPLAN_ABOVE = 1.05

#: Plans (each measured in a rehearsal) at most, before the last one that fits is kept.
MAX_PLANS = 4


def network_bytes(backend: Any, tiles: Sequence[Sequence[int]], in_channels: int, calls: int = 1) -> int:
    """The memory ``backend`` takes on tiles of the shapes ``tiles`` (``calls`` calls, cycling), measured, bytes.

    Measured by calling the backend on tiles of zeros (:func:`fusemycell.memory.call_peak_bytes`: on a
    GPU the device's allocated bytes, on the host the resident set's peak), once per model, device,
    precision and tiles, and cached with the model (:data:`_MEASURED`, keyed by the network object, or
    by the backend when it has none). Measuring rather than modelling: what a call takes depends on the
    algorithm PyTorch or oneDNN picks for the shape (an im2col buffer of 27 times the input on small
    tiles), on the precision and, on the host, on what the C heap keeps between calls; no hand-kept
    constant follows all three.
    """
    owner = getattr(backend, "network", backend)
    device = getattr(backend, "device", None)
    precision = getattr(backend, "precision", None)
    shapes = tuple(tuple(int(t) for t in tile) for tile in tiles)
    key = (
        str(device),
        str(precision.dtype) if getattr(precision, "enabled", False) else "float32",
        int(in_channels),
        shapes,
        int(calls),
    )
    try:
        cache = _MEASURED.setdefault(owner, {})
    except TypeError:  # an owner that cannot be weakly referenced: measured every time
        cache = {}
    if key not in cache:
        batches = [np.zeros((1, int(in_channels), *shape), dtype=np.float32) for shape in shapes]

        def calls_in_a_thread() -> None:
            for call in range(int(calls)):
                backend(batches[call % len(batches)])

        def rehearse() -> None:  # in a thread of its own, as a stream's network runs (its own C heap arena)
            worker = threading.Thread(target=calls_in_a_thread, name="memory rehearsal")
            worker.start()
            worker.join()

        cache[key] = memory.call_peak_bytes(rehearse, device)
    return cache[key]


def tile_shapes(grid: HaloGrid) -> list[tuple[int, int, int]]:
    """The shapes of the tiles ``grid`` reads, the largest first (a core at an edge reads less halo)."""
    lengths = [sorted({span.read_length for span in spans}, reverse=True) for spans in grid.spans]
    return [(z, y, x) for z in lengths[0] for y in lengths[1] for x in lengths[2]]


def _device_bytes(backend: Any) -> float | None:
    """On a GPU, the memory a tile may take there (half the free memory); None on the host."""
    device = getattr(backend, "device", None)
    if device is None or device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return 0.5 * free


def host_load(source: Any, architecture: UNetConfig, flips: int, backend: Any, read_ahead: bool = True) -> HostLoad:
    """What streaming ``source`` holds on the host: from its transform when it is a preprocessed file.

    ``read_ahead``: whether output planes are computed ahead of the writer (``inference.background_io``).
    """
    device = getattr(backend, "device", None)
    pinned = device is not None and device.type == "cuda"
    ahead = OUTPUT_PLANES_AHEAD if read_ahead else 0
    transform = getattr(source, "transform", None)
    if transform is None:  # an array on the network's grid
        return HostLoad(in_channels=architecture.in_channels, flips=flips, pinned=pinned, planes_ahead=ahead)
    original, cropped, output = transform.original_shape, transform.cropped_shape, transform.output_shape
    return HostLoad(
        in_channels=architecture.in_channels,
        flips=flips,
        read_ratio=math.prod(cropped) / max(1, math.prod(output)),
        resampled=transform.output_spacing_zyx is not None,
        output_plane=int(original[1]) * int(original[2]),
        raw_width=int(original[2]),
        pinned=pinned,
        planes_ahead=ahead,
    )


def resolve_tiling(architecture: UNetConfig, settings: TileSettings) -> str:
    """``exact`` or ``blend`` for this model: ``auto`` picks exact for tile-invariant networks."""
    if settings.tiling == "blend":
        return "blend"
    if settings.tiling == "exact" and not architecture.tile_invariant:
        raise TilingError(
            "{exact} but this model normalises every tile by its own statistics (normalization: {norm}), so its "
            "prediction depends on how the volume is cut; use {blend} (or auto), or a model trained with "
            "normalization: none",
            exact=Setting("inference.tiling", "exact", assignment=False),
            norm=architecture.normalization,
            blend=Setting("inference.tiling", "blend", assignment=False),
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
    shape = tuple(int(s) for s in source.shape)
    if resolve_tiling(architecture, settings) == "blend":
        tiling = settings.model_copy(update={"tile_zyx": tuple(settings.tile_zyx or blend_tile)})
        check_blend_tiling(shape, tiling, card_tile=blend_tile)
        return StreamingPrediction(source, tta or backend, tiling, position=position, options=options)
    flips = len(tta.flip_sets) if tta is not None else 1
    load = host_load(source, architecture, flips, backend, read_ahead=options.read_ahead)
    grid = plan_exact(shape, backend, architecture, settings, load)
    return ExactPrediction(
        source,
        backend,
        grid,
        flip_sets=tta.flip_sets if tta is not None else ((),),
        batch_size=1 if grid.planned else settings.batch_size,
        position=position,
        options=options,
    )


def plan_exact(
    shape: Sequence[int], backend: Any, architecture: UNetConfig, settings: TileSettings, load: HostLoad
) -> HaloGrid:
    """The exact tiling of a volume of ``shape`` for this model, its memory plan from measurement.

    The network's bytes per voxel are measured (:func:`network_bytes`) in one call on the smallest exact
    tile (a core of one size multiple in its halo), the tiles planned with them, then measured again in a
    rehearsal (:func:`rehearsal_calls` calls) on the planned tiles' shapes (what a stream of tiles holds).
    Tiles that take more per voxel than planned are planned again, smaller, with their own value; tiles
    that take much less (a small tile's share of a call's fixed cost, and of the first call's, made the
    first estimate high) are planned again, larger, with theirs. At most :data:`MAX_PLANS` plans; the last
    that fits (measured within :data:`REPLAN_ABOVE` of what it was planned with) is used.
    Each measurement is cached with the model, so a folder of volumes of one shape measures once; the
    rehearsals cost a few tiles' time (a few percent of a study's).
    """
    if settings.steady_heap:  # a resident set that follows the live memory: the measurement predicts the stream
        memory.steady_heap()
    halo, multiple = receptive_halo(architecture), architecture.size_multiple
    plan = partial(exact_grid, shape, halo=halo, multiple=multiple, settings=settings, load=load)
    if settings.tile_zyx is not None:  # the tile is given: the network's memory does not choose it
        given = plan()
        if not given.planned:
            return given
        settings = settings.model_copy(update={"tile_zyx": None})  # set aside (and said so): plan from memory
        plan = partial(exact_grid, shape, halo=halo, multiple=multiple, settings=settings, load=load)
    channels, device_bytes = architecture.in_channels, _device_bytes(backend)
    probe = tuple(min(int(n), 2 * h + m) for n, h, m in zip(shape, halo, multiple))  # the smallest exact tile
    per_voxel = network_bytes(backend, [probe], channels) / math.prod(probe)
    fits = None
    for _ in range(MAX_PLANS):
        grid = plan(network_bytes_per_voxel=per_voxel, device_bytes=device_bytes)
        measured = planned_network_bytes(backend, grid, channels, settings) / math.prod(grid.tile)
        if measured <= REPLAN_ABOVE * per_voxel:
            fits = grid
            if measured * REPLAN_ABOVE >= per_voxel or len(grid) == 1:
                break  # as planned, or the whole volume in one tile
        per_voxel = measured
    return fits or grid


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
