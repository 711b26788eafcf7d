"""Which files an inference run predicts, and the folder rules that keep inputs safe (no Kedro).

The rules hold however the folders were chosen (defaults, ``raw_dir``, an environment's
YAML, ``--params``, symlinks, trailing slashes): paths are compared after resolving them.

- The output folder is never the folder the inputs are read from, nor the raw folder, nor inside
  either (raw folders are read with their sub-folders). One input file may have its output folder
  next to it (inside the file's folder), but not be predicted into its own folder (its prediction
  takes its name); an output ending in ``.tif``/``.tiff`` is that one file (one input file only).
- The output folder never holds raw pairs (a ``*_fused.tif`` or an angle/fused pair).
- Existing files that fusemycell did not write are not replaced (checked by the dataset
  that writes, from the provenance mark in their metadata; ``inference.overwrite`` lifts it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fusemycell.errors import Setting, UserError
from fusemycell.io.naming import TIFF_SUFFIXES, is_ome_zarr, volume_stem
from fusemycell.io.pairs import FILENAME_PATTERN


class UnsafeOutputError(UserError):
    """The output folder would overwrite inputs or raw data, or cannot be written; the message says how to proceed."""


class NoInputError(UserError):
    """The input folder holds nothing to predict; the message says what it holds."""


#: The output setting, as a message names it (``kedro run``: ``inference.output_dir``; ``fusemycell predict``: OUTPUT).
OUTPUT = Setting("inference.output_dir")
#: The same setting, as a message tells the user to set it (``--params inference.output_dir=FOLDER``).
CHOOSE_OUTPUT = Setting("inference.output_dir", "FOLDER")
INPUT = Setting("inference.input_dir")
CHOOSE_INPUT = Setting("inference.input_dir", "FOLDER")

#: Suffixes of file formats that an output name may end in but that predictions are never written as: the
#: output is a folder or one ``.tif``/``.tiff`` file (an OME-Zarr output is a folder of images,
#: ``inference.output_format: ome-zarr``, never one image named as OUTPUT).
UNWRITABLE_SUFFIXES = (
    ".zarr", ".n5", ".h5", ".hdf5", ".hdf", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".npy", ".npz", ".nd2",
    ".lif", ".ims", ".czi", ".oib", ".vsi", ".klb", ".mrc", ".nii", ".gz", ".zip", ".pdf", ".raw", ".txt",
)  # fmt: skip


def input_folder(location: str | Path) -> Path:
    """The folder a run reads: ``location`` itself, or the folder of one input (a file or an OME-Zarr image)."""
    path = Path(location).resolve()
    return path.parent if path.is_file() or is_ome_zarr(path.name) else path


def single_input(location: str | Path) -> bool:
    """Whether ``location`` is one input (a file, or an OME-Zarr image) rather than a folder of them."""
    path = Path(location)
    return path.is_file() or is_ome_zarr(path.name)


def is_file_output(output: str | Path) -> bool:
    """Whether the output ``output`` names one prediction file (``.tif``/``.tiff``, not an existing folder)."""
    path = Path(output)
    return path.suffix.lower() in TIFF_SUFFIXES and not path.is_dir()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _unwritable_suffix(output: Path) -> str | None:
    """The format suffix of ``output`` when predictions cannot be written under that name (None: they can)."""
    name = output.name.lower()
    suffix = next((s for s in UNWRITABLE_SUFFIXES if name.endswith(s) and len(name) > len(s)), None)
    if suffix is None or (output.is_dir() and not is_ome_zarr(output)):  # an existing folder of that name is one
        return None
    return ".ome.zarr" if name.endswith(".ome.zarr") else suffix


def check_output_name(output: str | Path) -> None:
    """Refuse an output named as a file format that predictions are not written in (``pred.ome.zarr``, ``x.png``).

    Predictions go into a folder, or, for one input file, into one ``.tif``/``.tiff`` file: a folder named
    ``x.ome.zarr`` holding TIFFs, or ``x.png`` holding a TIFF, would say something false about what it holds.
    """
    path = Path(output)
    suffix = _unwritable_suffix(path)
    if suffix is not None:
        raise UnsafeOutputError(
            "{output} {target}: predictions are not written as {suffix} files; {output} is a folder (the predictions "
            "keep their inputs' names) or, for one input file, one .tif/.tiff file. Choose another name ({choose})",
            output=OUTPUT,
            target=path,
            suffix=suffix,
            choose=CHOOSE_OUTPUT,
        )


def check_output_folder(inputs: str | Path, output: str | Path, raw_dir: str | Path | None) -> None:
    """Refuse an output that would replace the inputs or raw data, or be read back as inputs.

    - A folder of inputs: the output is not that folder, nor inside it (the predictions would be inputs
      of the next run), and is a folder (not a ``.tif`` file name).
    - One input file (or OME-Zarr image): the output is not the file itself nor the folder it is in (the
      prediction takes its name); a folder next to it, inside its folder, is fine.
    - Never the raw folder nor inside it, never a folder that holds raw pairs.

    ``raw_dir`` empty or None: no raw folder to protect (a direct call outside a Kedro run).

    Raises
    ------
    UnsafeOutputError
        Naming the output, the input (or raw folder) and the setting to change.
    """
    check_output_name(output)
    source, target = Path(inputs).resolve(), Path(output).resolve()
    one = single_input(inputs)
    if is_file_output(target) and not one:
        raise _unsafe(
            "names one TIFF file, but the input {source} is a folder: the predictions of a folder go into a folder. "
            "Give a folder as {choose}",
            target,
            source=source,
        )
    if one:
        if _within(target, source):
            raise _unsafe(
                "is the input {source} itself: the prediction would replace it. Choose another one ({choose})",
                target,
                source=source,
            )
        if target in (source.parent, Path(os.path.abspath(inputs)).parent.resolve()):  # a link's folder too
            raise _unsafe(
                "is the input folder, the one of {source}: its prediction, named after it, would replace it. "
                "Choose another one ({choose})",
                target,
                source=source,
            )
        protected = []
    else:
        protected = [("input folder", source)]
    protected += [("raw folder (raw_dir)", Path(raw_dir).resolve())] if raw_dir else []
    for name, folder in protected:
        if _within(target, folder):
            raise _unsafe(
                "{where} {name} {folder}: predictions would replace or mix with the inputs (raw folders are read "
                "with their sub-folders). Choose another one ({choose})",
                target,
                where="is the" if target == folder else "is inside the",
                name=name,
                folder=folder,
            )
    _check_no_raw_pairs(target.parent if is_file_output(target) else target)


def _check_no_raw_pairs(folder: Path) -> None:
    raw_files = sorted(_raw_pair_files(folder.iterdir() if folder.is_dir() else ()))
    if raw_files:
        raise _unsafe(
            "holds raw angle/fused pairs ({files}); predictions are never written next to raw pairs. "
            "Choose another one ({choose})",
            folder,
            files=", ".join(raw_files[:3]) + (", ..." if len(raw_files) > 3 else ""),
        )


def _unsafe(problem: str, target: Path, **values: object) -> UnsafeOutputError:
    """``inference.output_dir TARGET <problem>``, the output setting named as the printing command names it."""
    return UnsafeOutputError(
        "{output} {target} " + problem, output=OUTPUT, target=target, choose=CHOOSE_OUTPUT, **values
    )


def _raw_pair_files(entries: Iterable[Path]) -> list[str]:
    """Fused targets of raw pairs (predictions keep the angle's name, so a ``*_fused`` file is raw data)."""
    return [p.name for p in entries if (m := FILENAME_PATTERN.match(p.name)) and m["kind"].lower() == "fused"]


def is_fused_target(name: str) -> bool:
    """``*_fused.tif`` (any case): a target of a pair, not a single view to predict."""
    return volume_stem(name).lower().endswith("_fused")  # image_1_nucleus_fused.tif or .ome.zarr


@dataclass
class InputSelection:
    """The inputs of a run: what is predicted, what is skipped as a fused target."""

    predict: dict[str, str] = field(default_factory=dict)
    skipped_fused: list[str] = field(default_factory=list)


def _sub_folders(location: str | Path) -> str:
    """`` (it holds 2 sub-folder(s): day1, day2)`` for a folder with sub-folders, else empty."""
    folder = Path(location)
    below = (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) if folder.is_dir() else []
    )
    if not below:
        return ""
    return f" (it holds {len(below)} sub-folder(s): {', '.join(below[:5])}{', ...' if len(below) > 5 else ''})"


def select_inputs(files: dict[str, str], location: str | Path) -> InputSelection:
    """Split ``{name: path}`` into single views to predict and fused targets to skip.

    Raises
    ------
    NoInputError
        When nothing is left to predict, naming the folder and why.
    """
    selection = InputSelection()
    for name, path in files.items():
        if is_fused_target(name):
            selection.skipped_fused.append(name)
        else:
            selection.predict[name] = path
    if not files:
        raise NoInputError(
            "no .tif/.tiff file or .ome.zarr image in {input} {location}{below}; sub-folders are not searched: "
            "give the folder of the volumes, or one file, as {choose}",
            input=INPUT,
            location=location,
            below=_sub_folders(location),
            choose=CHOOSE_INPUT,
        )
    if not selection.predict:
        raise NoInputError(
            "{location} holds only fused volumes ({count} *_fused.tif), no single view to predict: give the angle "
            "files as {choose}",
            location=location,
            count=len(selection.skipped_fused),
            choose=CHOOSE_INPUT,
        )
    return selection
