"""napari's reader preference for FuseMyCell files, set on the plugin's first use.

Two readers claim ``*.tif``: this plugin's (which gives a layer the file's voxel size as ``scale``)
and napari's built-in one (``scale`` 1, 1, 1). With two and no preference, ``viewer.open(path)``
(``napari file.tif``, File > Open, drag and drop) raises ``MultipleReaderError`` and the window asks
which one to use. napari picks the reader of the most specific pattern of its setting
``plugins.extension2reader`` that matches the file's full path (``score_specificity``: a pattern
with a path separator, ``*/image_*_*_angle.tif``, beats ``*.tif``).

:func:`prefer_fusemycell_reader` adds this plugin's reader for the FuseMyCell names only
(:data:`PATTERNS`: ``image_<id>_<channel>_angle.tif`` and ``..._fused.tif``, ``.tiff`` too), never
for all TIFFs, and never over a reader already set for the same pattern (a user's choice, e.g. to
undo it: the pattern set to ``napari``). :func:`on_first_use` does it once per process, logging what
it set; the reader, the widget and the sample data call it. napari saves the setting: every later
session opens FuseMyCell files with this reader.

napari runs no plugin code before it looks for a file's readers (npe2 matches the manifest's
filename patterns only), so on a fresh install the very first FuseMyCell file opened, before any
other use of the plugin, still gets napari's chooser; picking FuseMyCell there is a first use.
``python -m fusemycell.napari.preferences`` sets the preference beforehand (``--undo`` gives those
names back to napari's reader).
Python's ``viewer.open(path)`` defaults to ``plugin="napari"``: ``plugin=None`` follows the
preference, as napari's window does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

#: The plugin's name in its manifest (``napari.yaml``): the reader a preference names.
PLUGIN = "fusemycell"
#: FuseMyCell file names (``image_3_nucleus_angle.tif``), as patterns napari matches against full paths.
PATTERNS = (
    "*/image_*_*_angle.tif",
    "*/image_*_*_fused.tif",
    "*/image_*_*_angle.tiff",
    "*/image_*_*_fused.tiff",
)

logger = logging.getLogger(__name__)
_lock = threading.Lock()
_done = threading.Event()


def prefer_fusemycell_reader(settings: Any = None) -> list[str]:
    """Make this plugin the reader of the FuseMyCell patterns that have none in napari's settings.

    ``settings``: napari's settings object (default: ``napari.settings.get_settings()``, saved to the
    user's settings file as napari saves it). Returns the patterns added (none when each already had a
    reader: this plugin's or one the user chose).
    """
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [pattern for pattern in PATTERNS if pattern not in current]
    if added:
        # a new dict, not an update in place: napari saves the settings when the field is assigned
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN)}
    return added


def on_first_use() -> list[str]:
    """:func:`prefer_fusemycell_reader` the first time it is called in this process, logged once.

    Never fails the plugin's work: a settings file that cannot be written is a warning. Returns the
    patterns added (none on later calls).
    """
    with _lock:
        if _done.is_set():
            return []
        _done.set()
        try:
            added = prefer_fusemycell_reader()
        except Exception as exc:  # noqa: BLE001 - a preference never stops a file from opening
            logger.warning("could not set napari's reader preference for FuseMyCell files: %s", exc)
            return []
    if added:
        logger.info(
            "napari now opens FuseMyCell files (%s) with the fusemycell reader, which keeps their voxel size; "
            "change it in Preferences > Plugins (File extension readers)",
            ", ".join(added),
        )
    return added


def forget_first_use() -> None:
    """Let :func:`on_first_use` act again (for tests, with a throw-away settings object)."""
    _done.clear()


#: napari's built-in reader, as a preference names it.
NAPARI_READER = "napari"


def prefer_napari_reader(settings: Any = None) -> list[str]:
    """Undo :func:`prefer_fusemycell_reader`: the patterns naming this plugin now name napari's built-in reader,
    a choice :func:`on_first_use` keeps (a pattern merely removed would be set again). The patterns changed."""
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    changed = [pattern for pattern in PATTERNS if current.get(pattern) == PLUGIN]
    if changed:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(changed, NAPARI_READER)}
    return changed


def main(arguments: list[str] | None = None) -> None:
    """``python -m fusemycell.napari.preferences [--undo]``: set (or undo) the preference now, saying what changed."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m fusemycell.napari.preferences",
        description="Make the fusemycell reader napari's choice for FuseMyCell file names (it keeps the voxel size).",
    )
    parser.add_argument(
        "--undo", action="store_true", help="give those names back to napari's built-in reader (kept from then on)"
    )
    undo = parser.parse_args(arguments).undo
    changed = prefer_napari_reader() if undo else prefer_fusemycell_reader()
    from napari.settings import get_settings

    where = get_settings().config_path
    if not changed:
        print(f"nothing to change in {where}: " + ("no pattern names fusemycell" if undo else "each has a reader"))
    for pattern in changed:
        print(f"{pattern}: {NAPARI_READER if undo else PLUGIN} (in {where})")


if __name__ == "__main__":
    main()
