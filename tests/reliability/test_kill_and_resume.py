"""Work killed with SIGKILL part-way, then run again: nothing half-written is taken for complete.

Each test starts the real work (training, preprocessing, patching, inference) in
a child Python process and kills it, with its whole process group, by SIGKILL:
no ``finally``, no ``atexit``, no cleanup runs, as after the OOM killer or a
cluster's time limit. To kill at a known point rather than after a guessed
delay, the child stops there (mid-epoch, mid-checkpoint, mid-TIFF, between the
two renames of a store), writes a marker file and waits; the parent kills it as
soon as the marker appears. What is on disk then is exactly what a crash at
that point leaves. The work is then run again, and every output must be complete
and nothing temporary read as data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io.core import DatasetError

from fusemycell.datasets import FuseMyCellPairsDataset, PatchStoreDataset, TiffFolderDataset
from fusemycell.inference.apply import InferenceSettings, make_backend, predict_file
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import write_volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import CheckpointError, TrainedModel, safe_torch_load, save_model
from fusemycell.models.unet import UNet3D
from fusemycell.patching.store import PatchStore, PatchStoreError, write_patch_store
from fusemycell.pipelines.inference.nodes import plan_predictions
from fusemycell.pipelines.preprocessing.nodes import plan_normalized_volumes, scan_raw_volumes
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.training.engine import BEST_MODEL, LAST_CHECKPOINT, train
from tests.training.conftest import make_store
from tests.training.test_engine import _assert_same_weights, _config

pytestmark = pytest.mark.slow  # real processes killed and resumed

EPOCHS = 3
MARKER_TIMEOUT_S = 180  # generous: the machine may be busy; a healthy child parks within seconds

# Shared by every child: stop at a known point, tell the parent, wait for SIGKILL.
PRELUDE = '''
import json, os, sys, time
from pathlib import Path

import tifffile

ARGS = json.loads(Path(sys.argv[1]).read_text())


def park():
    """Tell the parent where we are and wait to be killed (never return)."""
    Path(ARGS["marker"]).touch()
    time.sleep(120)
    os._exit(3)  # the parent did not kill us: it fails the test on the exit code


def park_in_tiff_write(file_number, tile_number):
    """Stop inside the file_number-th TIFF write, once tile_number tiles have reached the file."""
    real_imwrite, count = tifffile.imwrite, [0]

    def parking(tiles, handle):
        for index, tile in enumerate(tiles):
            if index == tile_number:
                if hasattr(handle, "flush"):
                    handle.flush()  # the tiles so far are on disk, as they would be after a while
                park()
            yield tile

    def imwrite(file, data=None, *args, **kwargs):
        count[0] += 1
        if count[0] == file_number:
            data = parking(data, file)
        return real_imwrite(file, data, *args, **kwargs)

    tifffile.imwrite = imwrite
'''

TRAINING = """
import io

import torch

import fusemycell.training.engine as engine
import fusemycell.training.steps as steps
from fusemycell.training.checkpoint import CHECKPOINT_FORMAT
from fusemycell.training.config import TrainingConfig

epochs_done = 0
if ARGS["stop"] == "mid-epoch":  # the second training batch of epoch 2: weights and optimizer moved, nothing saved
    real_loss, calls = steps.image_loss, [0]

    def image_loss(*args, **kwargs):
        if epochs_done == 1 and torch.is_grad_enabled():  # validation runs without gradients
            calls[0] += 1
            if calls[0] == 2:
                park()
        return real_loss(*args, **kwargs)

    steps.image_loss = image_loss
else:
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        kind = obj.get("format") if isinstance(obj, dict) else None
        if ARGS["stop"] == "mid-save" and kind == CHECKPOINT_FORMAT and obj["epoch"] == 2:
            buffer = io.BytesIO()  # half of epoch 2's checkpoint reaches its temporary file
            real_save(obj, buffer)
            handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
            handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            handle.flush()
            park()
        last_best = kind == "fusemycell-unet" and obj["card"]["validation"]["epoch"] == ARGS["last"]
        if ARGS["stop"] == "before-best" and last_best:
            park()  # about to write best.pt of the last epoch
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def on_epoch(metrics):
    global epochs_done
    epochs_done = metrics.epoch


config = TrainingConfig(**{"monitor": "val_nssim", **ARGS["config"]})  # patch stores only, no whole volumes
engine.train(config, ARGS["train"], ARGS["val"], epoch_callback=on_epoch)
"""

PREPROCESSING = """
from fusemycell.datasets import FuseMyCellPairsDataset
from fusemycell.pipelines.preprocessing.nodes import plan_normalized_volumes, scan_raw_volumes
from fusemycell.preprocessing.config import PreprocessingConfig

config = PreprocessingConfig.model_validate(ARGS["params"])
raw_pairs = FuseMyCellPairsDataset(path=ARGS["raw"]).load()
scans = scan_raw_volumes(raw_pairs, config)
volumes, _ = plan_normalized_volumes(raw_pairs, scans, sorted(raw_pairs), config)
park_in_tiff_write(file_number=3, tile_number=4)
FuseMyCellPairsDataset(path=ARGS["out"]).save(volumes)
"""

PATCHING = """
import numpy as np
import pandas as pd

import fusemycell.patching.store as store

count = ARGS["count"]
rng = np.random.default_rng(ARGS["seed"])
patches = [(i, rng.random((4, 8, 8), np.float32), rng.random((4, 8, 8), np.float32)) for i in range(count)]


def cut_patches():
    for row, angle, fused in patches:
        if ARGS["stop"] == "mid-patches" and row == count // 2:
            park()
        yield row, angle, fused


if ARGS["stop"] == "between-renames":  # the old store moved aside, the new one not yet in place
    real_replace = os.replace

    def replace(source, target):
        real_replace(source, target)
        if Path(target).name.endswith(".old"):
            park()

    store.os.replace = replace
index = pd.DataFrame({"pair": "image_0_nucleus", "origin_z": range(count)})
store.write_patch_store(ARGS["target"], index, (4, 8, 8), "float32", cut_patches())
"""

INFERENCE = """
from fusemycell.datasets import TiffFolderDataset
from fusemycell.inference.settings import InferenceSettings
from fusemycell.models.model_file import load_model
from fusemycell.pipelines.inference.nodes import plan_predictions

settings = InferenceSettings.model_validate(ARGS["params"])
planned = plan_predictions(TiffFolderDataset(path=ARGS["inputs"]).load(), load_model(ARGS["model"]), settings, "")
park_in_tiff_write(file_number=2, tile_number=3)
TiffFolderDataset(path=ARGS["out"]).save(planned)
"""


def _run_until_parked(tmp_path: Path, name: str, body: str, **args) -> None:
    """Run ``body`` in a child Python process and SIGKILL it (its whole group) once it has parked."""
    marker = tmp_path / f"{name}.parked"
    args_file = tmp_path / f"{name}.json"
    args_file.write_text(json.dumps({**args, "marker": str(marker)}))
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(body))
    log_path = tmp_path / f"{name}.log"
    env = {**os.environ, "FUSEMYCELL_PROGRESS": "off", "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, str(script), str(args_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
            start_new_session=True,  # its own process group: the kill reaches any helper process too
        )
    try:
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while not marker.exists():
            if child.poll() is not None:
                pytest.fail(f"{name}: the child ended ({child.returncode}) before parking:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: the child did not park within {MARKER_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, log_path.read_text()


def _voxels(data) -> np.ndarray:
    """All planes of a lazily computed volume, in order (as the writer streams them)."""
    return np.stack([np.asarray(data[z]) for z in range(data.shape[0])])


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith((".partial", ".old")))


# ------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    return make_store(folder / "train", 6, seed=0), make_store(folder / "val", 3, seed=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, stores):
    return train(_config(tmp_path_factory.mktemp("straight"), epochs=EPOCHS), *stores)


#: where the child is killed: the epoch of the last complete checkpoint then on disk
STOPS = {
    "mid-epoch": 1,  # in epoch 2's training loop
    "mid-save": 1,  # half-way through writing epoch 2's checkpoint
    "before-best": EPOCHS,  # after the last epoch's checkpoint, before its best.pt
}


@pytest.mark.parametrize("stop", STOPS)
def test_training_killed_resumes_after_the_last_complete_checkpoint(tmp_path, stores, uninterrupted, stop):
    assert uninterrupted.best_epoch == EPOCHS  # so the last epoch writes a best.pt ("before-best" stops there)
    complete = STOPS[stop]
    config = _config(tmp_path, epochs=EPOCHS)
    checkpoints = Path(config.checkpoint_dir)
    _run_until_parked(
        tmp_path,
        "train",
        TRAINING,
        config=config.model_dump(mode="json"),
        train=str(stores[0]),
        val=str(stores[1]),
        stop=stop,
        last=EPOCHS,
    )

    assert safe_torch_load(checkpoints / LAST_CHECKPOINT)["epoch"] == complete  # complete: it loads
    # no file is ahead of that checkpoint (a best.pt of an epoch that never completed would be resumed as best)
    assert safe_torch_load(checkpoints / BEST_MODEL)["card"]["validation"]["epoch"] <= complete
    leftovers = _temporaries(checkpoints)
    if stop == "mid-epoch":  # killed outside any save: plant what a kill in the middle of one leaves
        assert leftovers == []
        whole = (checkpoints / LAST_CHECKPOINT).read_bytes()
        (checkpoints / f".{LAST_CHECKPOINT}.0badf00d.partial").write_bytes(whole[: len(whole) // 2])
        leftovers = _temporaries(checkpoints)
    # one file cut short, under atomic_torch_save's temporary name; resuming from it would have failed
    interrupted = BEST_MODEL if stop == "before-best" else LAST_CHECKPOINT
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{interrupted}."), leftovers
    with pytest.raises(CheckpointError, match="truncated"):
        safe_torch_load(leftovers[0])

    resumed_epochs: list[int] = []
    resumed = train(
        config.model_copy(update={"resume": True}), *stores, epoch_callback=lambda m: resumed_epochs.append(m.epoch)
    )
    assert resumed_epochs == list(range(complete + 1, EPOCHS + 1))  # starts after the last complete checkpoint
    assert [m.epoch for m in resumed.history] == list(range(1, EPOCHS + 1))  # every epoch once
    assert len(resumed.history) == len(uninterrupted.history)
    assert safe_torch_load(checkpoints / LAST_CHECKPOINT)["epoch"] == EPOCHS
    _assert_same_weights(resumed.model, uninterrupted.model)  # as if never killed
    assert resumed.best_epoch == uninterrupted.best_epoch
    best = safe_torch_load(checkpoints / BEST_MODEL)
    assert best["card"]["validation"]["epoch"] == resumed.best_epoch


# ------------------------------------------------------------------------------------------ preprocessing

PREPROCESSING_PARAMS = {"workers": 1, "crop": {"enabled": False}}
RAW_SHAPE = (12, 64, 64)


def _raw_folder(folder: Path) -> Path:
    z, y, x = np.mgrid[: RAW_SHAPE[0], : RAW_SHAPE[1], : RAW_SHAPE[2]]
    rng = np.random.default_rng(0)
    for pair in range(2):
        blob = np.exp(-((z - 6) ** 2 / 8 + (y - 20 - 10 * pair) ** 2 / 200 + (x - 32) ** 2 / 200))
        for kind in ("angle", "fused"):
            data = (100 + 3000 * blob + rng.normal(0, 20, blob.shape)).clip(0).astype(np.uint16)
            write_volume(folder / f"image_{pair}_nucleus_{kind}.tif", data, (2.0, 0.5, 0.5), {"channel": "nucleus"})
    return folder


def test_preprocessing_killed_mid_volume_leaves_only_complete_volumes_and_the_rerun_completes(tmp_path):
    raw, out = _raw_folder(tmp_path / "raw"), tmp_path / "normalized"
    raw_pairs = FuseMyCellPairsDataset(path=raw).load()
    config = PreprocessingConfig.model_validate(PREPROCESSING_PARAMS)
    volumes, _ = plan_normalized_volumes(raw_pairs, scan_raw_volumes(raw_pairs, config), sorted(raw_pairs), config)
    expected = {f"{name}.tif": _voxels(volume.data) for name, volume in volumes.items()}
    assert len(expected) == 4 and all(a.shape == RAW_SHAPE for a in expected.values())

    # killed while writing the third of four volumes
    _run_until_parked(tmp_path, "preprocess", PREPROCESSING, raw=str(raw), out=str(out), params=PREPROCESSING_PARAMS)
    visible = sorted(p.name for p in out.glob("*.tif"))
    assert visible == sorted(expected)[:2]  # the two written before the kill
    for name in visible:
        np.testing.assert_array_equal(read_volume(out / name).data, expected[name])  # each one whole
    [temporary] = _temporaries(out)  # the volume being written: under a temporary name only
    assert temporary.name.startswith(".image_1_nucleus_angle.tif.") and temporary.stat().st_size > 0
    listing = FuseMyCellPairsDataset(path=out).load()
    assert sorted(listing) == ["image_0_nucleus"]  # what the next pipeline would read: complete files only

    FuseMyCellPairsDataset(path=out).save(volumes)  # the rerun
    listing = FuseMyCellPairsDataset(path=out).load()
    assert sorted(listing) == ["image_0_nucleus", "image_1_nucleus"]
    for pair in listing.values():
        for path in (pair.angle, pair.fused):
            np.testing.assert_array_equal(read_volume(path).data, expected[Path(path).name])
    assert sorted(p.name for p in out.glob("*.tif")) == sorted(expected)
    assert _temporaries(out) == []  # the rerun cleared what the killed run left


# ------------------------------------------------------------------------------------------ patching


@pytest.mark.parametrize("stop", ["mid-patches", "between-renames"])
def test_patching_killed_leaves_the_old_store_or_none_and_the_rerun_completes(tmp_path, stop):
    target = tmp_path / "patches" / "train"
    old_rows = 3
    write_patch_store(
        target,
        pd.DataFrame({"pair": "image_0_nucleus", "origin_z": range(old_rows)}),
        (4, 8, 8),
        "float32",
        [(i, np.zeros((4, 8, 8)), np.zeros((4, 8, 8))) for i in range(old_rows)],
    )
    old_files = {p.name: p.read_bytes() for p in target.iterdir()}
    new_rows = 6

    _run_until_parked(tmp_path, "patch", PATCHING, target=str(target), count=new_rows, seed=7, stop=stop)
    if stop == "mid-patches":  # the old store is untouched and still loads
        assert {p.name: p.read_bytes() for p in target.iterdir()} == old_files
        assert len(PatchStore(target)) == old_rows
        assert [p.name.startswith(".train.") for p in _temporaries(target.parent)] == [True]
    else:  # killed between moving the old store aside and moving the new one in: no store, said clearly
        assert not target.exists()
        with pytest.raises(PatchStoreError, match="not a patch store"):
            PatchStore(target)
        with pytest.raises(DatasetError, match="kedro run --pipelines patching"):
            PatchStoreDataset(path=target).load()
        assert sorted(p.suffix for p in _temporaries(target.parent)) == [".old", ".partial"]

    rng = np.random.default_rng(7)  # the child's patches
    patches = [(i, rng.random((4, 8, 8), np.float32), rng.random((4, 8, 8), np.float32)) for i in range(new_rows)]
    index = pd.DataFrame({"pair": "image_0_nucleus", "origin_z": range(new_rows)})
    write_patch_store(target, index, (4, 8, 8), "float32", patches)  # the rerun
    store = PatchStore(target)
    assert len(store) == new_rows
    assert _temporaries(target.parent) == []  # the rerun cleared what the killed run left
    for row, angle, fused in patches:
        np.testing.assert_array_equal(store[row][0], angle)
        np.testing.assert_array_equal(store[row][1], fused)


# ------------------------------------------------------------------------------------------ inference


def test_inference_killed_mid_prediction_leaves_only_complete_predictions_and_the_rerun_completes(tmp_path):
    inputs, out = tmp_path / "inputs", tmp_path / "predictions"
    rng = np.random.default_rng(3)
    names = [f"image_{i}_nucleus_angle.tif" for i in range(3)]
    for name in names:
        write_volume(inputs / name, rng.integers(100, 3000, (9, 40, 36)).astype(np.uint16), (2.0, 0.5, 0.5))
    torch.manual_seed(0)
    config = UNetConfig(depth=2, base_channels=4, spacing_zyx=(2.0, 0.5, 0.5))
    model = TrainedModel(UNet3D(config), card_for(config, (8, 16, 16)))
    save_model(model, tmp_path / "model.pt")
    params = {"device": "cpu", "tile_zyx": [8, 16, 16], "input_dir": str(inputs), "output_dir": str(out)}
    settings = InferenceSettings(device="cpu", tile_zyx=(8, 16, 16))
    backend = make_backend(model, settings)
    expected = {name: _voxels(predict_file(str(inputs / name), backend, settings, model.card).data) for name in names}

    # killed while writing the second of three predictions
    _run_until_parked(
        tmp_path, "infer", INFERENCE, inputs=str(inputs), out=str(out), model=str(tmp_path / "model.pt"), params=params
    )
    listed = TiffFolderDataset(path=out).load()  # what evaluation would read
    assert sorted(listed) == names[:1]
    for name, source in listed.items():
        written = read_volume(source.path).data
        assert written.shape == expected[name].shape and written.dtype == np.uint16
        np.testing.assert_allclose(written, expected[name], atol=1)  # whole (a missing tile would read as zeros)
    [temporary] = _temporaries(out)
    assert temporary.name.startswith(f".{names[1]}.") and temporary.stat().st_size > 0

    planned = plan_predictions(
        TiffFolderDataset(path=inputs).load(), model, InferenceSettings.model_validate(params), ""
    )
    report = planned.report
    TiffFolderDataset(path=out).save(planned)  # the rerun (takes over the killed run's stale lock)
    listed = TiffFolderDataset(path=out).load()
    assert sorted(listed) == names and report["failures"] == []
    assert _temporaries(out) == []  # the rerun cleared what the killed run left
    for name, source in listed.items():
        np.testing.assert_allclose(source().data, expected[name], atol=1)
