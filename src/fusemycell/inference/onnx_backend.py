"""ONNX export of the trained network, and an ONNX Runtime backend for the predictor.

The exported graph is the network proper (:meth:`UNet3D.forward_padded`) with
dynamic batch and spatial axes; the backend pads each batch to a multiple of the
network's pooling factor (replicating the border, as the PyTorch model does) and
crops the result, so both backends give the same predictions for any size.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fusemycell.io.atomic import writing_atomically
from fusemycell.models.card import ModelCard, card_from_legacy
from fusemycell.models.checkpoint import TrainedModel

#: ONNX metadata key holding the model card (JSON).
CARD_KEY = "fusemycell_card"


class _Exportable(torch.nn.Module):
    def __init__(self, model: TrainedModel):
        super().__init__()
        self.network = model.network

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.network.forward_padded(volume)


def export_onnx(model: TrainedModel, path: str | os.PathLike, opset: int = 18) -> Path:
    """Write ``model`` as ONNX (input ``single_view``, output ``fused``, axes ``N, 1, z, y, x`` dynamic).

    The model card travels in the ONNX metadata (``fusemycell_card``, JSON), so the
    file alone can be applied (:attr:`OnnxBackend.card`).
    """
    import onnx

    path = Path(path)
    multiple = model.config.size_multiple
    example = torch.rand(1, model.config.in_channels, *(2 * m for m in multiple))
    module = _Exportable(model).eval()
    axes = {0: "batch", 2: "z", 3: "y", 4: "x"}
    with writing_atomically(path) as temporary:
        with warnings.catch_warnings():
            # instance normalisation always uses the input's statistics: "train=True" is what it should be
            warnings.filterwarnings("ignore", message=".*instance_norm.*")
            # the replicate padding's slices: left unfolded, the graph is the same (the tests compare outputs)
            warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1")
            _export(module, example, temporary, axes, opset)
        exported = onnx.load(str(temporary))
        entry = exported.metadata_props.add()
        entry.key, entry.value = CARD_KEY, model.card.model_dump_json()
        onnx.save(exported, str(temporary))
    return path


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, axes: dict[int, str], opset: int) -> None:
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["single_view"],
        output_names=["fused"],
        dynamic_axes={"single_view": axes, "fused": axes},
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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        size = batch.shape[2:]
        padding = [(0, 0), (0, 0)] + [(0, (-n) % m) for n, m in zip(size, self.multiple)]
        padded = np.pad(batch.astype(np.float32), padding, mode="edge") if any(p[1] for p in padding) else batch
        (output,) = self.session.run(["fused"], {"single_view": np.ascontiguousarray(padded, dtype=np.float32)})
        return output[..., : size[0], : size[1], : size[2]]
