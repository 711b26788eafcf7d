"""The trained-model file: the network's weights with its model card, saved and read safely.

A model file holds only tensors and plain Python values: the weights and the
:class:`~fusemycell.models.card.ModelCard` (architecture, normalisation, voxel
size, resampling, tile, training summary) as a dict. It rebuilds the network
without the training code and never unpickles arbitrary objects
(``torch.load(weights_only=True)``). Version 1 files (architecture plus a free
``metadata`` dict) are converted to a card on load.

A file that is not a model file is refused with a message saying what it really is
(:mod:`fusemycell.models.file_kind`: empty, zeros, an image, an ONNX export, a
bioimage.io package, a training checkpoint, a bare state dict, ...) and what to give
instead. A model may be read from any location fsspec opens (``s3://``, ``gs://``,
``memory://``; the protocol's package installed) as well as a local path.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from pydantic import ValidationError

from fusemycell.errors import Setting, UserError
from fusemycell.io.atomic import could_not_write, writing_atomically
from fusemycell.models.card import CARD_VERSION, ModelCard, card_from_legacy
from fusemycell.models.config import UNetConfig
from fusemycell.models.file_kind import FileKind, identify, pickled_globals
from fusemycell.models.unet import UNet3D

logger = logging.getLogger(__name__)

MODEL_FORMAT = "fusemycell-unet"
#: Version of the model file: 1 = architecture + free metadata dict, 2 = the model card.
MODEL_VERSION = CARD_VERSION
#: The ``format`` of a training checkpoint (``last.pt``, :mod:`fusemycell.training.checkpoint`).
CHECKPOINT_FORMAT = "fusemycell-checkpoint"
#: Where a command takes the model file from.
MODEL_SETTING = Setting("inference.model_uri", "FILE")


class CheckpointError(UserError):
    """A model or checkpoint file cannot be used; the message names the file, says what it is and what to do.

    ``values["what"]``, where present, is what the file really is ("an empty file (0 bytes)").
    """


@dataclass
class TrainedModel:
    """A network with everything needed to apply it."""

    network: UNet3D
    card: ModelCard
    """Architecture, normalisation, voxel size, resampling, tile, training summary."""

    @property
    def config(self) -> UNetConfig:
        """The network's architecture (``card.architecture``)."""
        return self.card.architecture

    def for_channel(self, channel: str | None) -> TrainedModel:
        """The model as an input of ``channel`` is predicted with: the guard's correction weight of that channel
        (:meth:`ModelCard.architecture_for`); ``self`` when it is the architecture's own. The weights are shared."""
        architecture = self.card.architecture_for(channel)
        if architecture == self.card.architecture:
            return self
        view = copy.copy(self.network)  # the same parameters, buffers and layers; its own architecture
        view.config = architecture  # read by the forward pass only for the correction weight
        return TrainedModel(view, self.card)

    def payload(self) -> dict[str, Any]:
        """What is written to disk (tensors and plain values only)."""
        return {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "card": self.card.model_dump(mode="json"),
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }

    @classmethod
    def from_payload(cls, payload: Any, source: str = "", give: Setting | None = MODEL_SETTING) -> TrainedModel:
        """Rebuild a network from :meth:`payload` (or a version 1 payload, converted).

        Raises
        ------
        CheckpointError
            Naming ``source``: not a model file (saying what it is instead), an unknown version, an
            invalid card, or weights that do not fit the architecture the card describes.
        """
        card = read_card(payload, source, give)
        return cls(network=network_from_state(card.architecture, payload["state_dict"], source), card=card)


def model_digest(model: TrainedModel) -> str:
    """The model's identity: a SHA-256 of its card and its weights (names, shapes, types and bytes).

    Equal for a model and the same model saved and read again; different for another training run,
    another epoch, or the same weights with another card. An export records it, so that it is used
    only with its own model.
    """
    digest = hashlib.sha256(json.dumps(model.card.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in sorted(model.network.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")
    return digest.hexdigest()


def _not_a_model(source: Any, what: str, advice: str, give: Setting | None, **values: Any) -> CheckpointError:
    """``source: <what it is>. <what to do>``; without ``give`` (a file the user did not name), the generic way."""
    if give is None:
        advice = "fusemycell reads only the files it writes (weights with their model card)."
    else:
        values["give"] = give
    return CheckpointError("{source}: {what}. " + advice, source=source, what=what, **values)


#: What to give instead of a file of each kind (``{give}``: the setting that names the model file).
_ADVICE = {
    "empty": "Nothing was written to it, or it was truncated (a copy or a training run that stopped?). Give the "
    "model file (.pt) that training wrote ({give}).",
    "zeros": "Its content was never written (a copy or download that did not finish?). Copy the model file "
    "again, or give another one ({give}).",
    "damaged-zip": "Copy the model file again from where training wrote it, or give another one ({give}).",
    "image": "Images are what a model is applied to ({inputs}); the model is the .pt file that training wrote "
    "({give}).",
    "onnx": "To apply an ONNX export, set {backend} and {onnx}, and give the fusemycell model file (.pt) it "
    "was exported from ({give}).",
    "torchscript": "fusemycell applies its own model files (weights with their model card), the .pt file that "
    "training wrote ({give}).",
    "bioimageio": "It is made for bioimage.io tools (bioimageio.core, deepImageJ, ilastik, napari), which apply "
    "it themselves; fusemycell applies the model file the package was exported from (the .pt file written by "
    "the same training run, data/06_models/fusemycell_unet.pt by default; {give}).",
}
_DEFAULT_ADVICE = "A fusemycell model file is the .pt file that training wrote ({give})."


def not_a_model_file(source: Any, kind: FileKind, give: Setting | None = MODEL_SETTING) -> CheckpointError:
    """The error for a file of ``kind`` (never a PyTorch file) given as a model file."""
    settings = {
        "inputs": Setting("inference.input_dir", "FOLDER"),
        "backend": Setting("inference.backend", "onnx", assignment=False),
        "onnx": Setting("inference.onnx_path", str(source), assignment=False),
    }
    advice = _ADVICE.get(kind.kind, _DEFAULT_ADVICE)
    used = {name: setting for name, setting in settings.items() if "{" + name + "}" in advice}
    return _not_a_model(source, kind.what, advice, give, **used)


def read_card(payload: Any, source: str = "", give: Setting | None = MODEL_SETTING) -> ModelCard:
    """The card of a model file's payload; version 1 files are converted (see :func:`card_from_legacy`)."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise _foreign_payload(payload, source, give)
    version = payload.get("version")
    if not isinstance(payload.get("state_dict"), dict):
        raise CheckpointError("{source}: the model file holds no weights (state_dict)", source=source)
    try:
        if version == 1:
            card = card_from_legacy(payload["config"], dict(payload.get("metadata") or {}))
            logger.info(
                "%s: model file version 1, converted to a model card (no resampling, as version 1 predicted); "
                "re-save it with 'python -m fusemycell.models.model_file %s' to upgrade the file",
                source,
                source,
            )
            return card
        if version == MODEL_VERSION:
            return ModelCard.model_validate(payload["card"])
    except ValidationError as exc:
        raise CheckpointError(
            "{source}: invalid model card (version {version}): {problems}",
            source=source,
            version=version,
            problems=validation_summary(exc),
        ) from None
    except (KeyError, TypeError) as exc:
        raise CheckpointError(
            "{source}: invalid model card (version {version}): {problems}",
            source=source,
            version=version,
            problems=repr(exc),
        ) from None
    raise CheckpointError(
        "{source}: model file version {version} is unknown to this fusemycell (it reads versions 1 and {current}); "
        "a file from a newer fusemycell needs that release, an older one can be converted with "
        "'python -m fusemycell.models.model_file PATH' from a release that reads it",
        source=source,
        version=repr(version),
        current=MODEL_VERSION,
    )


def _foreign_payload(payload: Any, source: str, give: Setting | None) -> CheckpointError:
    """What a readable PyTorch file that is not a model file holds, and what to give instead."""
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        return _not_a_model(
            source,
            f"a fusemycell training checkpoint (the state of epoch {payload.get('epoch', '?')}, kept to resume "
            "training), not a trained model",
            "The model of that run is best.pt in the same folder, or the file training wrote at its end "
            "(data/06_models/fusemycell_unet.pt by default; {give}).",
            give,
        )
    if isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return _not_a_model(
            source,
            f"a bare PyTorch state dict ({len(payload)} tensors, such as '{next(iter(payload))}') without "
            "fusemycell's model card",
            "The card (architecture, normalisation, voxel size, tile) cannot be recovered from weights alone. "
            "Give the model file that training wrote ({give}; fusemycell.models.model_file.save_model writes a "
            "network's weights with its card).",
            give,
        )
    if isinstance(payload, dict):
        keys = ", ".join(repr(k) for k in list(payload)[:5]) + (", ..." if len(payload) > 5 else "")
        recorded = f" of format {payload['format']!r}" if "format" in payload else ""
        what = f"a PyTorch file holding a dict{recorded} (keys {keys or 'none'}), not a {MODEL_FORMAT} model file"
    else:
        what = f"a PyTorch file holding a {type(payload).__name__}, not a {MODEL_FORMAT} model file"
    return _not_a_model(source, what, _DEFAULT_ADVICE, give)


def validation_summary(error: ValidationError) -> str:
    """A pydantic error on one line: ``field.path: message; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


def network_from_state(config: UNetConfig, state_dict: dict[str, Any], source: str = "") -> UNet3D:
    """A :class:`UNet3D` of ``config`` with these weights, or an error saying how they disagree."""
    network = UNet3D(config)
    try:
        network.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            "{source}: the weights do not fit the architecture it describes (depth {depth}, base_channels "
            "{channels}): {detail}",
            source=source,
            depth=config.depth,
            channels=config.base_channels,
            detail=" ".join(str(exc).split())[:400],
        ) from None
    return network


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, then rename: never a half-written file.

    Raises
    ------
    OSError
        Naming ``path`` and the cause (full disk, read-only folder, ...); ``path`` is left as it was.
    """
    path = Path(path)
    try:
        # through Python's file: a full disk is an OSError, with its cause
        with writing_atomically(path) as temporary, open(temporary, "wb") as handle:
            torch.save(payload, handle)
    except BaseException as exc:
        # torch's writer, closing after a failed write, raises a RuntimeError ("unexpected pos") over the OSError
        cause = exc.__context__ if isinstance(exc, RuntimeError) else exc
        if not isinstance(cause, OSError):
            raise
        raise could_not_write(path, cause) from exc
    return path


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URI that fsspec opens (``s3://``, ``memory://``, ...), False for a local path (or ``file://``)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


@contextmanager
def open_model_file(location: str | os.PathLike, give: Setting | None = MODEL_SETTING) -> Iterator[BinaryIO]:
    """The file at ``location`` (a local path or an fsspec URI), open for binary reading.

    Raises
    ------
    CheckpointError
        Naming it: not found, a folder, or a location that cannot be read (unknown protocol, its package
        missing, no access).
    """
    if not is_remote(location):
        path = Path(str(location).removeprefix("file://"))
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "file not found"
            raise _not_a_model(location, what, "Give the model file (.pt) that training wrote ({give}).", give)
        with open(path, "rb") as handle:
            yield handle
        return
    with _remote_file(location, give) as handle:
        yield handle


@contextmanager
def _remote_file(location: str | os.PathLike, give: Setting | None) -> Iterator[BinaryIO]:
    import fsspec

    try:
        opened = fsspec.open(str(location), "rb")
        handle = opened.open()
    except FileNotFoundError:
        raise _not_a_model(
            location, "file not found", "Give the model file (.pt) that training wrote ({give}).", give
        ) from None
    except Exception as exc:  # noqa: BLE001 - fsspec raises ValueError, ImportError, its backends' own types
        raise CheckpointError(
            "{source}: cannot read it ({kind}: {detail}). Give a model file on a local disk or at a location "
            "fsspec reads with its package installed (s3:// needs s3fs, gs:// gcsfs), with {give}",
            source=location,
            kind=type(exc).__name__,
            detail=" ".join(str(exc).split())[:200],
            give=give or MODEL_SETTING,
        ) from None
    try:
        yield handle  # type: ignore[misc]
    finally:
        handle.close()


def safe_torch_load(location: str | os.PathLike, give: Setting | None = MODEL_SETTING) -> Any:
    """``torch.load(weights_only=True)`` of a local path or fsspec URI, with errors saying what the file is.

    A file that is not a PyTorch file is refused before PyTorch reads it, saying what it is
    (:func:`fusemycell.models.file_kind.identify`); one carrying pickled Python objects (code) is refused,
    not executed. ``give``: the setting that names the file, for the advice (None: a file the user did not
    name, such as a training checkpoint).
    """
    with open_model_file(location, give) as handle:
        kind = identify(handle)
        if not kind.may_be_model:
            raise not_a_model_file(location, kind, give)
        try:
            return torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower() and "weights_only" not in str(exc):
                raise _unreadable(location, kind, exc, give) from None
            raise _holds_code(location, handle, give) from None
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError... on damaged files
            raise _unreadable(location, kind, exc, give) from None


def _holds_code(location: Any, handle: BinaryIO, give: Setting | None) -> CheckpointError:
    names = [name for name in pickled_globals(handle) if not _is_plain_pickle_global(name)]
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    if any(name.startswith("torch.nn.modules.") for name in names):
        what = "a whole pickled network, saved with torch.save(model) rather than as weights with a model card"
    else:
        what = "a PyTorch file holding pickled Python objects besides tensors"
    return _not_a_model(
        location,
        what + (f" (it names {shown})" if shown else ""),
        "It is refused, not loaded: unpickling them would run code from the file. Give the model file that "
        "training wrote ({give}).",
        give,
    )


def _is_plain_pickle_global(name: str) -> bool:
    """Names every PyTorch file's pickle holds (tensor rebuilding, storages, containers): not worth showing."""
    if name.startswith("torch.") and not name.startswith("torch.nn."):
        return True
    return name.startswith("collections.") or name in ("__builtin__.set", "builtins.set", "builtins.dict")


def _unreadable(location: Any, kind: FileKind, exc: BaseException, give: Setting | None) -> CheckpointError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _not_a_model(
        location,
        f"{kind.what} that PyTorch cannot read ({detail[:200]}): damaged or cut short",
        "Copy the model file again from where training wrote it, or give another one ({give}).",
        give,
    )


def save_model(model: TrainedModel, location: str | os.PathLike) -> Path | str:
    """Write a model file: atomically on a local disk; in one write at an fsspec URI."""
    if not is_remote(location):
        return atomic_torch_save(model.payload(), str(location).removeprefix("file://"))
    import fsspec

    buffer = io.BytesIO()
    torch.save(model.payload(), buffer)
    with fsspec.open(str(location), "wb") as handle:
        handle.write(buffer.getvalue())
    return str(location)


def load_model(location: str | os.PathLike, give: Setting | None = MODEL_SETTING) -> TrainedModel:
    """Load a model file written by :func:`save_model` (``weights_only=True``), local or at an fsspec URI."""
    return TrainedModel.from_payload(safe_torch_load(location, give), source=str(location), give=give)


def upgrade_model_file(path: str | os.PathLike) -> Path | str:
    """Rewrite a model file (of any version this release reads) in the current version, atomically."""
    return save_model(load_model(path), path)


if __name__ == "__main__":  # python -m fusemycell.models.model_file PATH [PATH ...]
    import sys

    for argument in sys.argv[1:]:
        print(f"{upgrade_model_file(argument)}: model file version {MODEL_VERSION}")
