"""Which files an inference run predicts, and the folder rules that keep inputs safe (no Kedro).

The rules hold however the folders were chosen (defaults, ``raw_dir``, an environment's
YAML, ``--params``, symlinks, trailing slashes): paths are compared after resolving them.

- The output folder is never the folder the inputs are read from, nor the raw folder, nor inside
  either (raw folders are read with their sub-folders).
- The output folder never holds raw pairs (a ``*_fused.tif`` or an angle/fused pair).
- Existing files that fusemycell did not write are not replaced (checked by the dataset
  that writes, from the provenance mark in their metadata; ``inference.overwrite`` lifts it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fusemycell.io.naming import is_ome_zarr, volume_stem
from fusemycell.io.pairs import FILENAME_PATTERN


class UnsafeOutputError(ValueError):
    """The output folder would overwrite inputs or raw data; the message says how to proceed."""


def input_folder(location: str | Path) -> Path:
    """The folder a run reads: ``location`` itself, or the folder of one input (a file or an OME-Zarr image)."""
    path = Path(location).resolve()
    return path.parent if path.is_file() or is_ome_zarr(path.name) else path


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_folder(inputs: str | Path, output: str | Path, raw_dir: str | Path | None) -> None:
    """Refuse an output folder that is (or is inside) the input folder or the raw folder, or holds raw pairs.

    ``raw_dir`` empty or None: no raw folder to protect (a direct call outside a Kedro run).

    Raises
    ------
    UnsafeOutputError
        Naming both folders and the option to change.
    """
    source, target = input_folder(inputs), Path(output).resolve()
    protected = [("input folder", source)] + ([("raw folder (raw_dir)", Path(raw_dir).resolve())] if raw_dir else [])
    for name, folder in protected:
        if _within(target, folder):
            where = "is the" if target == folder else "is inside the"
            raise UnsafeOutputError(
                f"the inference output folder {target} {where} {name} {folder}: predictions would replace or "
                "mix with the inputs (raw folders are read with their sub-folders). "
                "Choose another one: --params inference.output_dir=FOLDER"
            )
    raw_files = sorted(_raw_pair_files(target.iterdir() if target.is_dir() else ()))
    if raw_files:
        raise UnsafeOutputError(
            f"the inference output folder {target} holds raw angle/fused pairs ({', '.join(raw_files[:3])}"
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
