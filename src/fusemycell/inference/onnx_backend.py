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

from fusemycell.errors import Setting, UserError
from fusemycell.io.atomic import writing_atomically
from fusemycell.models.card import ModelCard, card_from_legacy
from fusemycell.models.model_file import TrainedModel, is_remote, model_digest

#: ONNX metadata key holding the model card (JSON).
CARD_KEY = "fusemycell_card"
#: ONNX metadata key holding the identity of the model it was exported from (:func:`model_digest`).
DIGEST_KEY = "fusemycell_model_digest"
#: The command that writes a trained model's ONNX export again (the training pipeline's export node alone).
EXPORT_COMMAND = "kedro run --pipelines training --nodes training.export_onnx_model"
#: The settings an ONNX message names.
ONNX_SETTING = Setting("inference.onnx_path", "FILE")
TORCH_BACKEND = Setting("inference.backend", "torch", assignment=False)


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
    (``fusemycell_card``, JSON), so the file alone can be applied (:attr:`OnnxBackend.card`), with
    the model's identity (``fusemycell_model_digest``, :func:`~fusemycell.models.model_file.model_digest`),
    so that the export is used only with its own model (:meth:`OnnxBackend.check_model`).
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
        for key, value in ((CARD_KEY, model.card.model_dump_json()), (DIGEST_KEY, model_digest(model))):
            entry = exported.metadata_props.add()
            entry.key, entry.value = key, value
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


class OnnxModelError(UserError):
    """The ONNX file of ``backend: onnx`` is missing, unreadable or not the model's; the message names it and what
    to do."""


def open_session(path: Path | str, providers: list[str]) -> object:
    """An ONNX Runtime session of ``path`` (local, or an fsspec URI), or :class:`OnnxModelError` in a line
    (never ONNX Runtime's traceback)."""
    import onnxruntime

    remote = is_remote(path)
    if not remote and not Path(path).is_file():
        raise OnnxModelError(
            "{path}: ONNX model {what}; check {onnx} (by default the .onnx file next to the model file, written by "
            "training), or use {torch}",
            path=path,
            what="a folder, not a file" if Path(path).is_dir() else "file not found",
            onnx=ONNX_SETTING,
            torch=TORCH_BACKEND,
        )
    try:
        return onnxruntime.InferenceSession(_remote_bytes(str(path)) if remote else str(path), providers=providers)
    except OnnxModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises InvalidProtobuf, Fail, ... for a bad file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxModelError(
            "{path}: not a readable ONNX model ({kind}: {detail}); truncated or another kind of file? Export it "
            "again ({command}), check {onnx}, or use {torch}",
            path=path,
            kind=type(exc).__name__,
            detail=detail[:200],
            command=EXPORT_COMMAND,
            onnx=ONNX_SETTING,
            torch=TORCH_BACKEND,
        ) from None


def _remote_bytes(uri: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise OnnxModelError("{path}: ONNX model file not found; check {onnx}", path=uri, onnx=ONNX_SETTING) from None


class OnnxBackend:
    """Runs an exported network with ONNX Runtime (CPU, or CUDA where its provider is installed)."""

    def __init__(
        self, path: str | os.PathLike, providers: list[str] | None = None, *, model: TrainedModel | None = None
    ):
        """Open ``path`` (local, or an fsspec URI); with ``model``, only if it is that model's export
        (:meth:`check_model`)."""
        import onnxruntime

        self.path: Path | str = str(path) if is_remote(path) else Path(path)
        available = onnxruntime.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session: Any = open_session(self.path, chosen)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.card: ModelCard | None = _card_of(self.metadata)
        self.multiple = self.card.architecture.size_multiple if self.card is not None else (1, 1, 1)
        self.output = OUTPUT
        if model is not None:
            self.check_model(model)

    def check_model(self, model: TrainedModel) -> None:
        """Refuse this export unless it was exported from ``model`` (the identity it records is ``model``'s).

        Raises
        ------
        OnnxModelError
            When it records another model's identity, or none (exported before the identity was recorded):
            saying how it differs and how to export the model again.
        """
        recorded = self.metadata.get(DIGEST_KEY)
        if recorded == model_digest(model):
            return
        if recorded is None:
            problem = (
                "it records no model identity (exported before fusemycell recorded one), so it cannot be told "
                "apart from another model's export"
            )
        elif self.card is not None and self.card.architecture != model.card.architecture:
            ours, theirs = model.card.architecture, self.card.architecture
            problem = (
                f"it was exported from another model, of another architecture (depth {theirs.depth}, base_channels "
                f"{theirs.base_channels}; the model given: depth {ours.depth}, base_channels {ours.base_channels})"
            )
        else:
            problem = "it was exported from another model (another training run or epoch, or another model card)"
        raise OnnxModelError(
            "{path}: {problem}. An ONNX export is used only with the model file it was exported from. Export the "
            "model again (in the project that trained it: {command}), give the model's own export ({onnx}), or "
            "use {torch}",
            path=self.path,
            problem=problem,
            command=EXPORT_COMMAND,
            onnx=ONNX_SETTING,
            torch=TORCH_BACKEND,
        )

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
                "{path}: the model's guard keeps a different correction for {channel} volumes, but this ONNX export "
                "has no '{output}' output (outputs: {outputs}); export it again ({command}), or use {torch}",
                path=self.path,
                channel=channel,
                output=channel_output(channel),
                outputs=", ".join(outputs),
                command=EXPORT_COMMAND,
                torch=TORCH_BACKEND,
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


def _card_of(metadata: dict[str, str]) -> ModelCard | None:
    """The model card an export carries (converted from a version 1 export's), or None."""
    if CARD_KEY in metadata:
        return ModelCard.model_validate_json(metadata[CARD_KEY])
    if "fusemycell_config" in metadata:  # exported by model file version 1
        return card_from_legacy(
            json.loads(metadata["fusemycell_config"]), json.loads(metadata.get("fusemycell_metadata", "{}"))
        )
    return None
