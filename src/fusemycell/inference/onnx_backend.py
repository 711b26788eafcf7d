"""ONNX export of the trained network, and an ONNX Runtime backend for the predictor.

The exported graph is the network proper (:meth:`UNet3D.forward_padded`) with
dynamic batch and spatial axes; the backend pads each batch to a multiple of the
network's pooling factor (replicating the border, as the PyTorch model does) and
crops the result, so both backends give the same predictions for any size.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusemycell.io.atomic import writing_atomically
from fusemycell.models.card import ModelCard, card_from_legacy
from fusemycell.models.model_file import TrainedModel

#: ONNX metadata key holding the model card (JSON).
CARD_KEY = "fusemycell_card"


#: Output of the ONNX graph: the prediction with the architecture's (smallest) correction weight.
OUTPUT = "fused"


def channel_output(channel: str) -> str:
    """The ONNX output of one channel's prediction (the guard's correction weight of that channel)."""
    return f"{OUTPUT}_{channel}"


def channel_scales(model: TrainedModel) -> dict[str, float]:
    """``{channel: correction weight}`` of the channels whose weight differs from the architecture's."""
    card = model.card
    return {
        channel: card.architecture_for(channel).residual_scale
        for channel in (card.guard.scale_by_channel if card.guard is not None else {})
        if card.architecture_for(channel) != card.architecture
    }


class _Exportable(torch.nn.Module):
    """The network proper; with ``scales``, also one output per channel at that channel's correction weight.

    The output at weight ``s`` is ``base + s * correction``: linear in ``s``, so every channel's output
    comes from one pass at the architecture's weight ``s0`` and one at a channel's weight.
    """

    def __init__(self, model: TrainedModel, scales: dict[str, float]):
        super().__init__()
        self.network = model.network
        self.channels = {
            channel: model.for_channel(channel).network for channel in scales
        }  # share the weights: the graph computes the trunk once per output (a few channels)
        self.names = list(scales)

    def forward(self, volume: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = [self.network.forward_padded(volume)]
        outputs += [self.channels[name].forward_padded(volume) for name in self.names]
        return tuple(outputs)


def export_onnx(model: TrainedModel, path: str | os.PathLike, opset: int = 18, *, channel_outputs: bool = True) -> Path:
    """Write ``model`` as ONNX (input ``single_view``, output ``fused``, axes ``N, 1, z, y, x`` dynamic).

    ``fused`` applies the architecture's correction weight: the smallest of the guard's per-channel
    scales, what an input of unknown channel gets. With ``channel_outputs``, each channel whose scale
    differs gets its own output, ``fused_<channel>`` (:func:`channel_output`), which
    :meth:`OnnxBackend.for_channel` reads. The model card travels in the ONNX metadata
    (``fusemycell_card``, JSON), so the file alone can be applied (:attr:`OnnxBackend.card`).
    """
    import onnx

    path = Path(path)
    multiple = model.config.size_multiple
    example = torch.rand(1, model.config.in_channels, *(2 * m for m in multiple))
    scales = channel_scales(model) if channel_outputs else {}
    module = _Exportable(model, scales).eval()
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    names = [OUTPUT, *(channel_output(channel) for channel in scales)]
    with writing_atomically(path) as temporary:
        with warnings.catch_warnings():
            # instance normalisation always uses the input's statistics: "train=True" is what it should be
            warnings.filterwarnings("ignore", message=".*instance_norm.*")
            # the replicate padding's slices: left unfolded, the graph is the same (the tests compare outputs)
            warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1")
            _export(module, example, temporary, axes, opset, names)
        exported = onnx.load(str(temporary))
        entry = exported.metadata_props.add()
        entry.key, entry.value = CARD_KEY, model.card.model_dump_json()
        onnx.save(exported, str(temporary))
    return path


def _export(
    module: torch.nn.Module, example: torch.Tensor, path: Path, axes: dict[int, str], opset: int, names: list[str]
) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["single_view"],
        output_names=names,
        dynamic_axes={"single_view": axes, **{name: axes for name in names}},
        opset_version=opset,
        dynamo=False,
    )


class OnnxModelError(ValueError):
    """The ONNX file of ``backend: onnx`` is missing or cannot be read; the message names it and what to do."""


def open_session(path: Path, providers: list[str]) -> object:
    """An ONNX Runtime session of ``path``, or :class:`OnnxModelError` in a line (never ONNX Runtime's traceback)."""
    import onnxruntime

    where = "inference.onnx_path (by default the .onnx file next to the model file, written by training)"
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "file not found"
        raise OnnxModelError(f"{path}: ONNX model {what}; check {where}, or use inference.backend: torch")
    try:
        return onnxruntime.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises InvalidProtobuf, Fail, ... for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxModelError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {detail[:200]}); truncated or another kind of "
            f"file? Export it again with the training pipeline, check {where}, or use inference.backend: torch"
        ) from None


class OnnxBackend:
    """Runs an exported network with ONNX Runtime (CPU, or CUDA where its provider is installed)."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None):
        import onnxruntime

        self.path = Path(path)
        available = onnxruntime.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session: Any = open_session(self.path, chosen)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CARD_KEY in metadata:
            self.card: ModelCard | None = ModelCard.model_validate_json(metadata[CARD_KEY])
        elif "fusemycell_config" in metadata:  # exported by model file version 1
            self.card = card_from_legacy(
                json.loads(metadata["fusemycell_config"]), json.loads(metadata.get("fusemycell_metadata", "{}"))
            )
        else:
            self.card = None
        self.multiple = self.card.architecture.size_multiple if self.card is not None else (1, 1, 1)
        self.output = OUTPUT

    def for_channel(self, channel: str) -> OnnxBackend:
        """The same session answering with ``channel``'s output (the guard's correction weight of that channel).

        Raises
        ------
        OnnxModelError
            When the export has no such output (exported before per-channel scales): export it again.
        """
        outputs = [o.name for o in self.session.get_outputs()]
        if channel_output(channel) not in outputs:
            raise OnnxModelError(
                f"{self.path}: the model's guard keeps a different correction for {channel} volumes, but this "
                f"ONNX export has no '{channel_output(channel)}' output (outputs: {', '.join(outputs)}); export it "
                "again with the training pipeline, or use inference.backend: torch"
            )
        view = copy.copy(self)
        view.output = channel_output(channel)
        return view

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = batch.shape[2:]
        padding = [(0, 0), (0, 0)] + [(0, (-n) % m) for n, m in zip(size, self.multiple)]
        padded = np.pad(batch.astype(np.float32), padding, mode="edge") if any(p[1] for p in padding) else batch
        (output,) = self.session.run([self.output], {"single_view": np.ascontiguousarray(padded, dtype=np.float32)})
        return output[..., : size[0], : size[1], : size[2]]
