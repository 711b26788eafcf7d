"""A full disk, a read-only folder or a refused rename during a save: a clear error, the old artefact intact.

The tests run as root, for whom ``chmod`` makes nothing read-only, so the faults
are injected where Python meets the operating system, for paths inside the output
folder only, and behave as the kernel does (checked once by hand on a small tmpfs,
full and remounted read-only):

* **disk full**: the folder has a few KiB left; a write past them is cut short,
  the next one raises ``ENOSPC``;
* **read-only folder**: opening a file for writing, creating a folder, renaming
  and deleting raise ``EROFS`` (deleting even a file that is not there);
* **final rename refused**: the finished temporary file or folder cannot be moved
  onto the target (``EACCES``; a file held open by another program on Windows).

For every artefact the pipeline writes, the failed save must name the target and
the cause, leave the previous artefact byte for byte as it was, and leave no
temporary file behind.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io.core import DatasetError

from fusemycell.datasets import FuseMyCellPairsDataset, TiffVolumeDataset
from fusemycell.io.formats import read_volume
from fusemycell.io.tiff import save_volume
from fusemycell.io.volume import Volume
from fusemycell.models.card import card_for
from fusemycell.models.config import UNetConfig
from fusemycell.models.model_file import TrainedModel, atomic_torch_save, safe_torch_load
from fusemycell.models.unet import UNet3D
from fusemycell.patching.store import PatchStore, write_patch_store

FREE_BYTES = 4096  # what is left on the "full" disk: headers fit, voxels do not


def _inside(path: object, folder: Path) -> bool:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return False  # a file descriptor
    return Path(os.fsdecode(path)).resolve().is_relative_to(folder.resolve())


def _writes(mode: str) -> bool:
    return any(flag in mode for flag in "wax+")


class _Disk:
    """Faults of one folder, at the layer of ``open`` and the ``os`` calls that change a folder."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path):
        self.monkeypatch, self.folder = monkeypatch, folder
        self.free = FREE_BYTES
        self.real_open = builtins.open

    def full(self) -> None:
        disk = self

        class FullDiskFile(io.FileIO):
            def write(self, data):
                view = memoryview(data).cast("B")
                if disk.free <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written = super().write(view[: disk.free])  # a short write, as the kernel does
                disk.free -= written
                return written

        def open_on_full_disk(file, mode="r", *args, **kwargs):
            if not (_inside(file, self.folder) and _writes(mode)):
                return self.real_open(file, mode, *args, **kwargs)
            options = {**dict(zip(("buffering", "encoding", "errors", "newline"), args)), **kwargs}
            raw = FullDiskFile(file, mode.replace("t", ""))
            if options.get("buffering", -1) == 0:
                return raw
            buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
            if "b" in mode:
                return buffered
            return io.TextIOWrapper(
                buffered,
                encoding=options.get("encoding") or "utf-8",
                errors=options.get("errors"),
                newline=options.get("newline"),
            )

        self._patch_open(open_on_full_disk)

    def read_only(self) -> None:
        def refuse(path: object) -> None:
            if _inside(path, self.folder):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

        def open_read_only(file, mode="r", *args, **kwargs):
            if _writes(mode):
                refuse(file)
            return self.real_open(file, mode, *args, **kwargs)

        def wrap(name: str, *checked: int) -> None:
            real = getattr(os, name)

            def refusing(*args, **kwargs):
                if name == "mkdir" and os.path.isdir(args[0]):
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(args[0]))
                for index in checked:
                    refuse(args[index])
                return real(*args, **kwargs)

            self.monkeypatch.setattr(os, name, refusing)

        real_os_open = os.open

        def os_open_read_only(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        self._patch_open(open_read_only)
        self.monkeypatch.setattr(os, "open", os_open_read_only)
        wrap("mkdir", 0)
        wrap("rmdir", 0)
        wrap("unlink", 0)
        wrap("remove", 0)
        wrap("replace", 0, 1)
        wrap("rename", 0, 1)

    def final_rename_refused(self) -> None:
        real_replace = os.replace

        def replace(source, target, *args, **kwargs):
            if os.fsdecode(source).endswith(".partial") and _inside(target, self.folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(target))
            return real_replace(source, target, *args, **kwargs)

        self.monkeypatch.setattr(os, "replace", replace)

    def _patch_open(self, fake: Callable) -> None:
        self.monkeypatch.setattr(builtins, "open", fake)
        self.monkeypatch.setattr(io, "open", fake)  # pathlib opens through io.open


FAULTS = {
    "disk full": ("full", os.strerror(errno.ENOSPC)),
    "read-only folder": ("read_only", os.strerror(errno.EROFS)),
    "final rename refused": ("final_rename_refused", os.strerror(errno.EACCES)),
}


def _volume(version: int) -> Volume:
    data = np.random.default_rng(version).integers(0, 60000, (4, 40, 36)).astype(np.uint16)
    return Volume(data, (2.0, 0.5, 0.5), {"channel": "nucleus", "study": f"v{version}"})


def _write_store(target: Path, version: int) -> None:
    rng = np.random.default_rng(version)
    count = 3 + version  # the new store differs in size too
    index = pd.DataFrame({"pair": "image_0_nucleus", "origin_z": range(count)})
    patches = [(i, rng.random((4, 8, 8), np.float32), rng.random((4, 8, 8), np.float32)) for i in range(count)]
    write_patch_store(target, index, (4, 8, 8), "float32", patches)


def _write_checkpoint(target: Path, version: int) -> None:
    config = UNetConfig(depth=2, base_channels=4)
    model = TrainedModel(UNet3D(config), card_for(config, fusemycell_version=str(version)))
    atomic_torch_save({"epoch": version, "model": model.payload()}, target)


#: artefact: (target inside the output folder, write version N to it, error type of a failed save, load it)
ARTEFACTS: dict[str, tuple[str, Callable[[Path, int], object], type[Exception], Callable[[Path], object]]] = {
    "TIFF volume (save_volume)": (
        "image_0_nucleus_angle.tif",
        lambda target, version: save_volume(target, _volume(version)),
        OSError,
        lambda target: read_volume(target).metadata["study"],
    ),
    "patch store (write_patch_store)": ("patches/train", _write_store, OSError, lambda target: len(PatchStore(target))),
    "checkpoint (atomic_torch_save)": (
        "checkpoints/last.pt",
        _write_checkpoint,
        OSError,
        lambda target: safe_torch_load(target)["epoch"],
    ),
    "pairs folder (FuseMyCellPairsDataset.save)": (
        "normalized",
        lambda target, version: FuseMyCellPairsDataset(path=target).save(
            {"image_0_nucleus": (_volume(version), _volume(version + 10))}
        ),
        DatasetError,
        lambda target: sorted(FuseMyCellPairsDataset(path=target).load()),
    ),
    "TIFF dataset (TiffVolumeDataset.save)": (
        "image_0_nucleus_fused.tif",
        lambda target, version: TiffVolumeDataset(filepath=str(target)).save(_volume(version)),
        DatasetError,
        lambda target: TiffVolumeDataset(filepath=str(target)).load().metadata["study"],
    ),
}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file and folder under ``folder``, hidden ones included, with the files' bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def _fault(monkeypatch: pytest.MonkeyPatch, folder: Path, method: str) -> Iterator[None]:
    with monkeypatch.context() as patches:
        getattr(_Disk(patches, folder), method)()
        yield


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("artefact", ARTEFACTS)
def test_failed_save_names_the_target_and_the_cause_and_keeps_the_previous_artefact(
    tmp_path, monkeypatch, artefact, fault
):
    relative, write, error_type, load = ARTEFACTS[artefact]
    method, cause = FAULTS[fault]
    output = tmp_path / "output"
    target = output / relative
    write(target, 1)
    loaded_before = load(target)
    before = _snapshot(output)

    with _fault(monkeypatch, output, method), pytest.raises(error_type) as failure:
        write(target, 2)

    message = str(failure.value)
    assert str(target) in message, message
    assert cause in message, message
    assert _snapshot(output) == before  # the old artefact byte for byte, and no temporary file or folder
    assert load(target) == loaded_before
    write(target, 2)  # once the fault is gone the same save works
    assert _snapshot(output) != before
    assert not [p for p in output.rglob("*") if ".partial" in p.name or p.name.endswith(".old")]


def test_the_simulated_full_disk_fails_like_a_real_one(tmp_path, monkeypatch):
    """The fault injection itself: writes inside the folder stop at the free space, outside they do not."""
    inside, outside = tmp_path / "full" / "a.bin", tmp_path / "b.bin"
    inside.parent.mkdir()
    with _fault(monkeypatch, inside.parent, "full"):
        outside.write_bytes(b"x" * 3 * FREE_BYTES)
        with pytest.raises(OSError) as failure, open(inside, "wb") as handle:
            handle.write(b"x" * 3 * FREE_BYTES)
    assert failure.value.errno == errno.ENOSPC
    assert inside.stat().st_size == FREE_BYTES and outside.stat().st_size == 3 * FREE_BYTES
