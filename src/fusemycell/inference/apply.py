"""Applying a trained model to a raw single-view file (the challenge's contract) or to an in-memory array.

Both go through :class:`~fusemycell.inference.transform.InputTransform`, built from
the model card: normalised with the input's own percentiles, optionally cropped to
the specimen, resampled to the training voxel size when the model was trained on
resampled volumes, predicted with the streaming sliding window, then mapped back
to the input's grid and to uint16. A file's prediction is a lazily computed
:class:`~fusemycell.io.volume.Volume` with the input's shape, voxel size and
metadata; writing it streams the whole chain.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fusemycell.errors import Setting, UserError
from fusemycell.inference.backends import Backend, TorchBackend
from fusemycell.inference.memory_plan import OUTPUT_PLANES_AHEAD
from fusemycell.inference.outside import DomainCheck, ResidualBaseBackend, check_array
from fusemycell.inference.predictor import predict_volume, resolve_tiling
from fusemycell.inference.read_ahead import BackgroundPlanes
from fusemycell.inference.settings import InferenceSettings
from fusemycell.inference.streams import StreamOptions
from fusemycell.inference.transform import InputTransform, scan_array, scan_input
from fusemycell.io.formats import read_volume
from fusemycell.io.volume import Volume
from fusemycell.models.card import ModelCard, channel_of

logger = logging.getLogger(__name__)


#: The blending tile's setting, as messages name it.
TILE = Setting("inference.tile_zyx", "DxHxW")


def resolve_tile(settings: InferenceSettings, card: ModelCard) -> tuple[int, int, int]:
    """The blending tile: ``inference.tile_zyx``, or the card's default tile; three sizes of at least one voxel.

    Raises
    ------
    ValueError
        When a size is below 1 (NumPy would otherwise fail later on an empty tile).
    """
    tile = settings.tile_zyx or card.default_tile_zyx
    if len(tile) != 3 or min(int(t) for t in tile) < 1:
        raise UserError("{tile} must be three sizes of at least 1 voxel, got {got}", tile=TILE, got=list(tile))
    return int(tile[0]), int(tile[1]), int(tile[2])


def check_tiling(settings: InferenceSettings, card: ModelCard) -> str:
    """The tiling this model gets (``exact`` or ``blend``), checked before any file is read.

    (A tile too small for exact tiling's halo is refused per volume, where its shape is known: a
    tile may be smaller than the halo along an axis the volume does not exceed.)

    Raises
    ------
    TilingError
        When exact tiling is asked of a model that normalises each tile.
    """
    resolve_tile(settings, card)
    return resolve_tiling(card.architecture, settings.tile_settings)


def predict_transformed(
    source: str | np.ndarray, transform: InputTransform, backend: Backend, settings: InferenceSettings, name: str
) -> Any:
    """Sequential array-like uint16 prediction of ``source`` (a file's path or an array) through ``transform``."""
    network_input = transform.network_input(source)
    prediction = predict_volume(
        network_input,
        backend,
        transform.card.architecture,
        settings.tile_settings,
        blend_tile=resolve_tile(settings, transform.card),
        position=transform.position_field(network_input, name),
        options=StreamOptions(description=f"predicting {name}", read_ahead=settings.background_io),
    )
    return transform.to_uint16(prediction)


def predict_file(path: str, backend: Backend, settings: InferenceSettings, card: ModelCard) -> Volume:
    """The prediction of one raw single-view file, computed lazily (stream it with ``save_volume``)."""
    transform = InputTransform.from_card(
        card,
        scan_input(path, card, settings.slab_depth),
        crop_to_specimen=settings.crop_to_specimen,
        min_output_range=settings.min_output_range,
    )
    header = read_volume(path, lazy=True)
    header.data.close()
    data = predict_transformed(path, transform, backend, settings, Path(path).name)
    if settings.background_io:  # planes computed ahead while the writer encodes and writes the last ones
        depth = resolve_tile(settings, card)[0] if check_tiling(settings, card) == "blend" else OUTPUT_PLANES_AHEAD
        data = BackgroundPlanes(data, depth=depth, description=f"predicting {path}", path=str(path))
    return Volume(
        data=data,
        spacing_zyx=header.spacing_zyx,
        metadata=header.metadata,
        source=path,
        spelling=header.spelling,
    )


def make_backend(model: Any, settings: InferenceSettings, onnx_path: str | None = None) -> Backend:
    """The PyTorch network on its device, or the ONNX Runtime session of its export.

    The tiling is checked here, once, before any file is read (see :func:`check_tiling`).
    """
    check_tiling(settings, model.card)
    if settings.backend == "onnx":
        from fusemycell.inference.onnx_backend import OnnxBackend

        if not onnx_path:
            raise UserError(
                "{backend} but {onnx} is not set",
                backend=Setting("inference.backend", "onnx", assignment=False),
                onnx=Setting("inference.onnx_path", "FILE"),
            )
        return OnnxBackend(onnx_path, model=model)  # refused unless exported from this very model
    return TorchBackend(model.network, settings.device, settings.amp)


class ChannelBackends:
    """The backends of one run, by input: the guard's correction weight of the input's channel (its file name
    gives it, :func:`~fusemycell.models.card.channel_of`; an unknown channel gets the architecture's, the
    smallest), or the residual base for an input outside the training domain under
    ``inference.outside_training: base``. Each is made once (a channel's network shares the weights).

    ``backend``: the run's backend (:func:`make_backend`), made on first use when not given.
    """

    def __init__(
        self, model: Any, settings: InferenceSettings, backend: Backend | None = None, onnx_path: str | None = None
    ):
        check_tiling(settings, model.card)
        self.model, self.settings, self.onnx_path = model, settings, onnx_path
        self._made: dict[str, Backend] = {} if backend is None else {"": backend}

    def __call__(self, name: str, check: DomainCheck | None = None) -> Backend:
        """The backend of the input ``name``.

        Raises
        ------
        OutsideTrainingError
            For an input outside the domain under ``refuse`` (naming it and the property).
        """
        if check is not None:
            check.raise_if_refused()
            if check.uses_base:
                return self._made.setdefault(
                    "base", ResidualBaseBackend(self.model.card.architecture, self.settings.device)
                )
        channel = channel_of(name)
        if channel is None or self.model.card.architecture_for(channel) == self.model.card.architecture:
            return self._run_backend()
        if channel not in self._made:
            run = self._run_backend()
            for_channel = getattr(run, "for_channel", None)  # ONNX Runtime: the export's output of that channel
            self._made[channel] = (
                for_channel(channel)
                if for_channel is not None
                else TorchBackend(self.model.for_channel(channel).network, self.settings.device, self.settings.amp)
            )
        return self._made[channel]

    def _run_backend(self) -> Backend:
        if "" not in self._made:
            self._made[""] = make_backend(self.model, self.settings, self.onnx_path)
        return self._made[""]


def predict_in_memory(
    single_view: np.ndarray,
    model: Any,
    settings: InferenceSettings,
    *,
    spacing_zyx: Sequence[float] | None = None,
    onnx_path: str | None = None,
    name: str = "in-memory volume",
    check: DomainCheck | None = None,
) -> np.ndarray:
    """The same prediction as :func:`predict_file` for an in-memory ZYX array (what the MLflow model serves).

    ``spacing_zyx`` is the array's voxel size (micrometres); it matters when the model
    resamples. Without it, the training data's acquisition voxel size is assumed (the
    median of the card's fingerprint; the training voxel size when the card has none).
    The array is checked against the card's training domain (``settings.outside_training``; an
    unknown voxel size is not checked) unless ``check`` gives the caller's check; an input outside
    it is logged in one line.
    """
    card: ModelCard = model.card
    if check is None:
        check = check_array(single_view, card, spacing_zyx, name, settings.outside_training)
        if check.outside:
            logger.warning("%s", check.line())
    backend = ChannelBackends(model, settings, onnx_path=onnx_path)(name, check)
    spacing = tuple(float(s) for s in spacing_zyx) if spacing_zyx is not None else assumed_spacing(card)
    transform = InputTransform.from_card(
        card,
        scan_array(single_view, card, spacing, name),  # type: ignore[arg-type]
        crop_to_specimen=settings.crop_to_specimen,
        min_output_range=settings.min_output_range,
    )
    mapped = predict_transformed(np.asarray(single_view), transform, backend, settings, name)
    return np.stack([mapped[z] for z in range(mapped.shape[0])])


def assumed_spacing(card: ModelCard) -> tuple[float, float, float]:
    """The voxel size assumed for an array given without one: the training data's (median acquisition)."""
    spacings = card.training_data.acquisition_spacings_zyx
    if not spacings:
        return card.spacing_zyx
    return tuple(float(v) for v in np.median(np.asarray(spacings, dtype=float), axis=0))  # type: ignore[return-value]
