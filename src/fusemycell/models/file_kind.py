"""What a file given as a model really is, from its first bytes, so every message about it can say so.

A fusemycell model file is a PyTorch file (a zip holding ``data.pkl``); what users give instead is
anything else: an empty file or one of zeros (a copy that did not finish), a TIFF (an image given as
the model), an ONNX export, a bioimage.io package (a zip holding ``rdf.yaml``), a zip cut short, or
bytes no program here reads. :func:`identify` looks at the content only, never at the name, and
reads nothing that could run code.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

#: Bytes read to tell the formats apart.
HEAD_BYTES = 64
#: Chunk size when checking that a whole file is zeros.
_CHUNK = 1 << 20

#: Formats known by their first bytes that are never a model file: ``(magic, what it is)``.
OTHER_FORMATS = (
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a BigTIFF image"),
    (b"MM\x00+", "a BigTIFF image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a Keras model or an image container, not a PyTorch file)"),
    (b"\x93NUMPY", "a NumPy array file (.npy)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip-compressed file (unpack it first?)"),
    (b"%PDF", "a PDF document"),
)


@dataclass(frozen=True)
class FileKind:
    """What a file is: ``kind`` for code, ``what`` for people ("a TIFF image")."""

    kind: str
    """``pytorch``, ``pytorch-legacy`` (a file that may be a model), or ``empty``, ``zeros``, ``image``,
    ``onnx``, ``torchscript``, ``bioimageio``, ``zip``, ``damaged-zip``, ``other``, ``unknown`` (never one)."""
    what: str
    """The file described in a phrase, with its size where it helps."""

    @property
    def may_be_model(self) -> bool:
        """True for PyTorch files, the only kind a model file can be."""
        return self.kind in ("pytorch", "pytorch-legacy")


def size_text(size: int) -> str:
    """``123 bytes``, ``56 kB``, ``4.2 MB``: a file size for people."""
    if size < 10_000:
        return f"{size} bytes"
    return f"{size / 1e3:.0f} kB" if size < 1_000_000 else f"{size / 1e6:.1f} MB"


def identify(handle: BinaryIO) -> FileKind:
    """The kind of the file open in ``handle`` (binary, seekable); the position is left at the start."""
    handle.seek(0, io.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    head = handle.read(HEAD_BYTES)
    handle.seek(0)
    try:
        if size == 0:
            return FileKind("empty", "an empty file (0 bytes)")
        if not head.strip(b"\x00") and _all_zeros(handle):
            return FileKind("zeros", f"a file of {size_text(size)} that are all zeros, no data")
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return _zip_kind(handle, size)
        return _by_magic(head, size) or _onnx_or_unknown(handle, head, size)
    finally:
        handle.seek(0)


def _by_magic(head: bytes, size: int) -> FileKind | None:
    for magic, what in OTHER_FORMATS:
        if head.startswith(magic):
            return FileKind("image" if "image" in what else "other", what)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return FileKind("pytorch-legacy", f"a pickle file ({size_text(size)})")
    return None


def _onnx_or_unknown(handle: BinaryIO, head: bytes, size: int) -> FileKind:
    if head[:1] == b"\x08" and _is_onnx(handle):
        return FileKind("onnx", "an ONNX file, not a fusemycell model file (.pt)")
    return FileKind("unknown", f"{size_text(size)} in no format fusemycell knows (it starts with {head[:8].hex(' ')})")


def _all_zeros(handle: BinaryIO) -> bool:
    while chunk := handle.read(_CHUNK):
        if chunk.strip(b"\x00"):
            return False
    return True


def _zip_kind(handle: BinaryIO, size: int) -> FileKind:
    try:
        with zipfile.ZipFile(handle) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return FileKind(
            "damaged-zip",
            f"a zip archive cut short (truncated) or damaged ({size_text(size)}, its table of contents unreadable; "
            "a PyTorch file is a zip, so probably a copy or download that did not finish)",
        )
    leaves = {name.rsplit("/", 1)[-1] for name in names}
    if leaves & {"rdf.yaml", "bioimageio.yaml"}:
        return FileKind("bioimageio", "a bioimage.io model package (a zip with rdf.yaml)")
    if "constants.pkl" in leaves:
        return FileKind("torchscript", "a TorchScript file (a compiled network, as a bioimage.io package holds)")
    if "data.pkl" in leaves:
        return FileKind("pytorch", f"a PyTorch file ({size_text(size)})")
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return FileKind("zip", f"a zip archive of {len(names)} files ({shown or 'empty'}), not a PyTorch file")


def _is_onnx(handle: BinaryIO) -> bool:
    """The content parses as an ONNX model (protobuf: field 1, the IR version, comes first)."""
    try:
        import onnx

        model = onnx.load_model_from_string(handle.read())
    except Exception:  # noqa: BLE001 - anything that does not parse is not an ONNX file
        return False
    return bool(model.graph.node) or bool(model.opset_import)


def pickled_globals(handle: BinaryIO) -> list[str]:
    """The classes and functions a PyTorch file's pickle names (``module.name``), read without unpickling.

    What ``weights_only`` loading refuses is among them; naming them tells a whole pickled network
    (``torch.nn.modules...``) from a script's own object (``__main__...``). Empty when unreadable.
    """
    try:
        if zipfile.is_zipfile(handle):
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            handle.seek(0)
            data = handle.read()
        found: list[str] = []
        strings: list[str] = []
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                found.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(argument, str):
                strings.append(argument)
    except Exception:  # noqa: BLE001 - a damaged pickle names nothing
        return []
    finally:
        handle.seek(0)
    return list(dict.fromkeys(found))
