"""The patch store: one folder per split, patches as two memory-mappable arrays plus an index.

Layout of a store folder::

    store.json   format, version, split, patch size, dtype, count
    angle.npy    (count, pz, py, px) inputs, NumPy format, memory-mappable
    fused.npy    (count, pz, py, px) targets
    index.csv    one row per patch: pair, channel, study, origin_z/y/x, how it was drawn, ...
    positions.npz  with position channels: each volume's coarse position field (fusemycell.position)

Each patch is one contiguous chunk of the ``.npy`` files, written with plain
file writes (no memory map kept while writing), so writing costs one patch of
memory. The folder is written under a temporary name and renamed, so a store is
either complete or absent. Readers open the memory maps lazily in each process,
which makes :class:`PatchStore` safe with several DataLoader workers.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusemycell.errors import UserError
from fusemycell.io.atomic import could_not_write, remove_leftovers, writing_atomically
from fusemycell.position import PositionChannels, PositionField
from fusemycell.progress import track

STORE_FORMAT = "fusemycell-patch-store"
STORE_VERSION = 1
ARRAYS = ("angle", "fused")


class PatchStoreError(UserError):
    """A patch store is missing, incomplete or inconsistent; the message names the folder."""


class _NpyWriter:
    """Writes fixed-size patches into a ``.npy`` file by index."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.file = open(path, "wb")  # closed by close()
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.file, header)
        self.offset = self.file.tell()
        self.patch_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self.dtype = dtype
        self.file.truncate(self.offset + self.patch_bytes * shape[0])

    def write(self, index: int, patch: np.ndarray) -> None:
        self.file.seek(self.offset + index * self.patch_bytes)
        self.file.write(np.ascontiguousarray(patch, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self.file.close()


def write_patch_store(
    directory: str | os.PathLike,
    index: pd.DataFrame,
    patch_size_zyx: tuple[int, int, int],
    dtype: str,
    patches: Iterable[tuple[int, np.ndarray, np.ndarray]],
    *,
    metadata: dict[str, Any] | None = None,
    before_rename: Callable[[Path], None] | None = None,
) -> Path:
    """Write a store from ``(row, angle_patch, fused_patch)`` triples (any order, every row once).

    ``before_rename`` may add files to the (temporary) folder once every patch is written.

    Raises
    ------
    PatchStoreError
        If a row is missing or written twice, or a patch has the wrong shape.
    """
    directory = Path(directory)
    remove_leftovers(directory.parent, directory.name)  # of a previous, killed write of this store
    try:
        with writing_atomically(directory) as partial:
            partial.mkdir()
            _write_patches(partial, directory, patch_size_zyx, np.dtype(dtype), patches, len(index))
            index.to_csv(partial / "index.csv", index=False)
            description = {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "count": len(index),
                "patch_size_zyx": list(patch_size_zyx),
                "dtype": np.dtype(dtype).name,
                **(metadata or {}),
            }
            (partial / "store.json").write_text(json.dumps(description, indent=2))
            if before_rename is not None:
                before_rename(partial)
    except OSError as exc:
        raise could_not_write(directory, exc) from exc
    return directory


def _write_patches(
    folder: Path,
    directory: Path,
    patch_size_zyx: tuple[int, int, int],
    dtype: np.dtype,
    patches: Iterable[tuple[int, np.ndarray, np.ndarray]],
    count: int,
) -> None:
    """Every row's patches into ``folder``'s arrays (``directory`` names the store in messages)."""
    writers: dict[str, _NpyWriter] = {}
    seen = np.zeros(count, dtype=bool)
    try:
        for name in ARRAYS:
            writers[name] = _NpyWriter(folder / f"{name}.npy", (count, *patch_size_zyx), dtype)
        for row, angle, fused in track(patches, f"writing {directory}", total=count, unit="patch"):
            if seen[row]:
                raise PatchStoreError(f"{directory}: patch {row} written twice")
            for name, patch in zip(ARRAYS, (angle, fused)):
                if tuple(patch.shape) != tuple(patch_size_zyx):
                    raise PatchStoreError(
                        f"{directory}: patch {row} ({name}) has shape {patch.shape}, not {patch_size_zyx}"
                    )
                writers[name].write(row, patch)
            seen[row] = True
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            with contextlib.suppress(OSError):  # closing flushes, which fails again on a full disk
                writer.file.close()
        raise
    if not seen.all():
        raise PatchStoreError(f"{directory}: {int((~seen).sum())} of {count} patches were never written")


POSITIONS = "positions.npz"


def write_position_fields(folder: Path, fields: dict[str, PositionField]) -> None:
    """Keep each volume's position field in ``folder/positions.npz`` (keys ``<pair>/<array>``)."""
    arrays = {f"{pair}/{name}": value for pair, item in fields.items() for name, value in item.to_arrays().items()}
    with open(folder / POSITIONS, "wb") as handle:
        np.savez(handle, **arrays)


class PatchStore:
    """Read access to a patch store; ``store[i]`` is ``(angle, fused)`` float32 arrays."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        description_path = self.directory / "store.json"
        if not description_path.is_file():
            raise PatchStoreError(
                f"{self.directory}: not a patch store (no store.json); "
                "run 'kedro run --pipelines patching' to create it"
            )
        try:
            self.description = json.loads(description_path.read_text())
        except json.JSONDecodeError as exc:
            raise PatchStoreError(f"{description_path}: unreadable store description ({exc})") from exc
        if self.description.get("format") != STORE_FORMAT:
            raise PatchStoreError(f"{self.directory}: store.json is not a {STORE_FORMAT} description")
        self.patch_size_zyx = tuple(self.description["patch_size_zyx"])
        self.index = pd.read_csv(self.directory / "index.csv")
        if len(self.index) != self.description["count"]:
            raise PatchStoreError(
                f"{self.directory}: index.csv has {len(self.index)} rows, store.json says {self.description['count']}"
            )
        self._arrays: dict[str, np.ndarray] | None = None
        self._fields: dict[str, PositionField] | None = None

    @property
    def position(self) -> PositionChannels:
        """The position channels of the store's patches (disabled for a store written without them)."""
        if "position" not in self.description:
            return PositionChannels(enabled=False)
        return PositionChannels.model_validate(self.description["position"])

    def position_field(self, pair: str) -> PositionField:
        """The position field of one volume of the store.

        Raises
        ------
        PatchStoreError
            Naming the store when it has no field for ``pair``.
        """
        if self._fields is None:
            path = self.directory / POSITIONS
            if not path.is_file():
                raise PatchStoreError(f"{self.directory}: no {POSITIONS}; run 'kedro run --pipelines patching' again")
            with np.load(path) as data:
                grouped: dict[str, dict[str, np.ndarray]] = {}
                for key in data.files:
                    name, _, array = key.rpartition("/")
                    grouped.setdefault(name, {})[array] = data[key]
            self._fields = {name: PositionField.from_arrays(arrays) for name, arrays in grouped.items()}
        if pair not in self._fields:
            raise PatchStoreError(f"{self.directory}: {POSITIONS} has no position field for {pair}")
        return self._fields[pair]

    def __len__(self) -> int:
        return int(self.description["count"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The memory-mapped ``angle`` and ``fused`` arrays (opened on first use in each process)."""
        if self._arrays is None:
            self._arrays = {name: np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
            for name, array in self._arrays.items():
                if array.shape != (len(self), *self.patch_size_zyx):
                    raise PatchStoreError(
                        f"{self.directory}: {name}.npy has shape {array.shape}, expected "
                        f"{(len(self), *self.patch_size_zyx)}"
                    )
        return self._arrays

    def __getitem__(self, item: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.arrays()
        return (
            np.asarray(arrays["angle"][item], dtype=np.float32),
            np.asarray(arrays["fused"][item], dtype=np.float32),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]
