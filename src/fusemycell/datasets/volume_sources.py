"""What a folder dataset loads: one lazy loader per volume, as Kedro's ``PartitionedDataset`` loads callables.

A node calls a :class:`VolumeSource` when it needs the volume and gets a lazily read
:class:`~fusemycell.io.volume.Volume` (the header now, voxels as they are sliced): laziness stays, and
the node opens no file by path. A file that is not a volume is called what it is ("a PNG image"),
not "not found".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kedro.io.core import DatasetError

from fusemycell.errors import UserError
from fusemycell.io.formats import read_volume
from fusemycell.io.naming import TIFF_SUFFIXES
from fusemycell.io.volume import Volume

#: The first bytes of formats people try instead of a TIFF stack, and what to call them.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"ZISRAWFILE", "a Zeiss CZI file"),
    (b"\x93NUMPY", "a NumPy array file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BM", "a BMP image"),
)

#: Microscopy formats known by their suffix.
_SUFFIXES = {
    ".nd2": "a Nikon ND2 file",
    ".lif": "a Leica LIF file",
    ".ims": "an Imaris file",
    ".czi": "a Zeiss CZI file",
    ".oib": "an Olympus OIB file",
    ".vsi": "an Olympus VSI file",
    ".npy": "a NumPy array file",
    ".h5": "an HDF5 file",
    ".hdf5": "an HDF5 file",
    ".zarr": "a Zarr folder",
}


def file_kind(path: str | Path) -> str:
    """What ``path`` is, in words: ``a PNG image``, ``a Leica LIF file``, ``an empty file``, ``a .txt file``."""
    path = Path(path)
    if path.is_dir():
        return "a folder"
    try:
        with open(path, "rb") as handle:
            start = handle.read(16)
    except OSError:
        return "an unreadable file"
    if not start:
        return "an empty file"
    for signature, kind in _SIGNATURES:
        if start.startswith(signature):
            return kind
    suffix = path.suffix.lower()
    return _SUFFIXES.get(suffix, f"a {suffix} file" if suffix else "a file without a suffix")


class VolumeSourceError(UserError, DatasetError):
    """A folder dataset's input is not there or not a volume: the user's to fix (and a ``DatasetError`` for Kedro)."""


def not_a_volume(path: str | Path) -> VolumeSourceError:
    """The error for a file given where a TIFF stack or an OME-Zarr image is expected."""
    return VolumeSourceError(
        "{path}: {kind}, not a TIFF stack (.tif/.tiff) or an OME-Zarr image (.ome.zarr); save the single view as a "
        "ZYX TIFF (Fiji: File > Save As > Tiff...)",
        path=path,
        kind=file_kind(path),
    )


@dataclass(frozen=True)
class VolumeSource:
    """One volume of a folder: call it for the volume, read lazily; :attr:`path` is where it is."""

    path: str

    @property
    def name(self) -> str:
        """The file (or OME-Zarr image) name."""
        return Path(self.path).name

    def __call__(self) -> Volume:
        """The volume, lazily read (raises :class:`~fusemycell.io.volume.VolumeFormatError` naming the file)."""
        return read_volume(self.path, lazy=True)


def close(volume: Volume) -> None:
    """Let go of a lazily read volume's open file, if it holds one."""
    closing = getattr(volume.data, "close", None)
    if callable(closing):
        closing()


def list_tiffs(location: Path) -> tuple[dict[str, str], list[str]]:
    """``({name: path}, [problems])`` of the TIFF files of a folder, or of one TIFF file.

    Hidden files are skipped; dangling links and folders named ``*.tif`` are problems, not inputs.
    """
    if location.is_file():
        if location.suffix.lower() not in TIFF_SUFFIXES:
            raise not_a_volume(location)
        return {location.name: str(location)}, []
    if not location.is_dir():
        what = "a link to nothing" if location.is_symlink() else "no such file or folder"
        raise VolumeSourceError("{location}: {what}", location=location, what=what)
    files, problems = {}, []
    for entry in sorted(location.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() not in TIFF_SUFFIXES:
            continue
        if entry.is_file():
            files[entry.name] = str(entry)
        elif entry.is_dir():
            problems.append(f"{entry.name}: a folder, not a TIFF file")
        else:
            problems.append(f"{entry.name}: a link to a file that does not exist")
    return files, problems
