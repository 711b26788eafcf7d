"""Every message about a file given as a model says what the file really is, and what to give instead."""

import io
import os
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from fusemycell.errors import find_user_error
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.file_kind import identify, pickled_globals
from fusemycell.models.model_file import CHECKPOINT_FORMAT, CheckpointError, TrainedModel, load_model, save_model
from fusemycell.models.unet import UNet3D

#: How ``fusemycell predict`` words the model's setting (the CLI's own names).
PREDICT = {"inference.model_uri": "--model"}


@pytest.fixture(scope="module")
def model():
    config = UNetConfig(depth=2, base_channels=4)
    return TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))


def _model_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.payload(), buffer)
    return buffer.getvalue()


def _bioimageio_zip(path, model):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\n")
        archive.writestr("fusemycell_unet.torchscript.pt", _model_bytes(model))


def _write(kind, path, model):
    """A file of ``kind`` at ``path``: what users have given as a model."""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zeros":
        path.write_bytes(bytes(50_000))
    elif kind == "random":
        path.write_bytes(b"\x13\x37" + np.random.default_rng(0).bytes(3000))
    elif kind == "tiff":
        tifffile.imwrite(path, np.zeros((4, 8, 8), np.uint16))
    elif kind == "truncated":
        data = _model_bytes(model)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bioimageio":
        _bioimageio_zip(path, model)
    elif kind == "onnx":
        from fusemycell.inference.onnx_backend import export_onnx

        export_onnx(model, path.with_suffix(".onnx"))
        os.replace(path.with_suffix(".onnx"), path)
    elif kind == "state_dict":
        torch.save(model.network.state_dict(), path)
    elif kind == "whole_network":
        torch.save(model.network, path)
    elif kind == "training_checkpoint":
        torch.save({"format": CHECKPOINT_FORMAT, "epoch": 4, "model": model.network.state_dict()}, path)
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")


#: What each kind of file is said to be, and a word of what to do.
CASES = {
    "empty": ("an empty file (0 bytes)", "Nothing was written"),
    "zeros": ("all zeros", "never written"),
    "random": ("in no format fusemycell knows (it starts with 13 37", "training wrote"),
    "tiff": ("a TIFF image", "inference.input_dir"),
    "truncated": ("a zip archive cut short (truncated) or damaged", "Copy the model file again"),
    "bioimageio": ("a bioimage.io model package", "bioimageio.core, deepImageJ"),
    "onnx": ("an ONNX file", "inference.backend: onnx"),
    "state_dict": ("a bare PyTorch state dict (", "cannot be recovered from weights alone"),
    "whole_network": ("a whole pickled network, saved with torch.save(model)", "would run code"),
    "training_checkpoint": ("a fusemycell training checkpoint (the state of epoch 4", "best.pt"),
    "zip": ("a zip archive of 1 files (notes.txt)", "training wrote"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_file_that_is_not_a_model_is_named_for_what_it_is(tmp_path, model, kind):
    path = tmp_path / "given.pt"
    _write(kind, path, model)
    what, advice = CASES[kind]
    with pytest.raises(CheckpointError) as refused:
        load_model(path)
    message = refused.value.message(PREDICT)
    assert message.startswith(f"{path}: ") and what in message and advice in message
    assert "--model" in message  # the setting, in the words of the command that prints it
    assert "--params inference.model_uri=FILE" in str(refused.value)  # kedro run's words
    for false_claim in ("weights_only", "truncated?", "pickled Python objects that"):
        assert false_claim not in message
    assert "\n" not in message


def test_the_model_file_itself_is_a_pytorch_file(tmp_path, model):
    path = save_model(model, tmp_path / "model.pt")
    with open(path, "rb") as handle:
        kind = identify(handle)
        assert kind.kind == "pytorch" and kind.may_be_model
        assert handle.tell() == 0  # left where reading starts


def test_a_pickled_networks_classes_are_named_without_unpickling(tmp_path, model):
    torch.save(model.network, tmp_path / "whole.pt")
    with open(tmp_path / "whole.pt", "rb") as handle:
        names = pickled_globals(handle)
    assert "fusemycell.models.unet.UNet3D" in names


def test_a_refusal_reaches_the_command_through_kedros_dataset_error(tmp_path, model):
    from fusemycell.datasets.model_dataset import TorchModelDataset

    path = tmp_path / "image.pt"
    _write("tiff", path, model)
    with pytest.raises(Exception) as raised:
        TorchModelDataset(filepath=str(path)).load()
    found = find_user_error(raised.value)
    assert isinstance(found, CheckpointError) and "a TIFF image" in found.message(PREDICT)


def test_a_training_checkpoint_read_for_resuming_says_what_the_file_is_and_how_to_start_over(tmp_path):
    from fusemycell.training.checkpoint import TrainingCheckpoint

    path = tmp_path / "last.pt"
    tifffile.imwrite(path, np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(CheckpointError, match=r"last.pt: cannot resume from it: it is a TIFF image") as refused:
        TrainingCheckpoint.read(path)
    assert "training.resume" in str(refused.value) and "inference.model_uri" not in str(refused.value)
