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

from fusemycell.io.naming import TIFF_SUFFIXES, is_ome_zarr, volume_stem
from fusemycell.io.pairs import FILENAME_PATTERN


class UnsafeOutputError(ValueError):
    """The output folder would overwrite inputs or raw data; the message says how to proceed."""


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
        Naming the output, the input (or raw folder) and the option to change.
    """
    source, target = Path(inputs).resolve(), Path(output).resolve()
    one = single_input(inputs)
    if is_file_output(target) and not one:
        raise UnsafeOutputError(
            f"the inference output {target} names one TIFF file, but the input {source} is a folder: the "
            "predictions of a folder go into a folder. Give a folder: --params inference.output_dir=FOLDER"
        )
    if one:
        if _within(target, source):
            raise UnsafeOutputError(
                f"the inference output {target} is the input {source} itself: the prediction would replace it. "
                "Choose another one: --params inference.output_dir=FOLDER"
            )
        if target in (source.parent, Path(os.path.abspath(inputs)).parent.resolve()):  # a link's folder too
            raise UnsafeOutputError(
                f"the inference output folder {target} is the input folder, the one of {source}: its prediction, "
                "named after it, would replace it. Choose another one: --params inference.output_dir=FOLDER"
            )
        protected = []
    else:
        protected = [("input folder", source)]
    protected += [("raw folder (raw_dir)", Path(raw_dir).resolve())] if raw_dir else []
    for name, folder in protected:
        if _within(target, folder):
            where = "is the" if target == folder else "is inside the"
            raise UnsafeOutputError(
                f"the inference output folder {target} {where} {name} {folder}: predictions would replace or "
                "mix with the inputs (raw folders are read with their sub-folders). "
                "Choose another one: --params inference.output_dir=FOLDER"
            )
    folder = target.parent if is_file_output(target) else target
    raw_files = sorted(_raw_pair_files(folder.iterdir() if folder.is_dir() else ()))
    if raw_files:
        raise UnsafeOutputError(
            f"the inference output folder {folder} holds raw angle/fused pairs ({', '.join(raw_files[:3])}"
            f"{', ...' if len(raw_files) > 3 else ''}); predictions are never written next to raw pairs. "
            "Choose another one: --params inference.output_dir=FOLDER"
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
    ValueError
        When nothing is left to predict, naming the folder and why.
    """
    selection = InputSelection()
    for name, path in files.items():
        if is_fused_target(name):
            selection.skipped_fused.append(name)
        else:
            selection.predict[name] = path
    if not files:
        raise ValueError(
            f"no .tif/.tiff file or .ome.zarr image in the inference input folder {location}"
            f"{_sub_folders(location)}; sub-folders are not searched: set --params inference.input_dir=FOLDER "
            "(the folder of the volumes, or one file)"
        )
    if not selection.predict:
        raise ValueError(
            f"{location} holds only fused volumes ({len(selection.skipped_fused)} *_fused.tif), no single view "
            "to predict: point inference.input_dir at the angle files"
        )
    return selection
