"""One data folder per dataset: a run on your own raw folder never replaces another dataset's artefacts.

The embedded demo (``raw_dir`` left at ``data/01_raw/synthetic``) keeps the catalog's locations as
written. A run on any other raw folder puts everything it makes under a folder of that dataset's
name in each data layer: with ``raw_dir: data/01_raw/fusemycell`` the model is
``data/06_models/fusemycell/fusemycell_unet.pt``, the preprocessed volumes
``data/02_intermediate/fusemycell/volumes``, the reports ``data/08_reporting/fusemycell/...``. A raw
folder inside ``data/01_raw`` is named by its folder name; one elsewhere also by a short digest of
its absolute path, so that two folders of the same name (``/exp1/raw`` and ``/exp2/raw``) never
share one. No Kedro import.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The embedded default's raw folder: its artefacts stay where the catalog writes them.
DEMO_RAW_DIR = "data/01_raw/synthetic"
#: ``data/<layer>/...`` locations that belong to a dataset (every layer but the raw data itself).
_DATASET_LAYER = re.compile(r"^(data/0[2-8]_[a-z_]+)/(.+)$")


def workspace_name(raw_dir: str | Path, project: str | Path) -> str | None:
    """The folder name of ``raw_dir``'s artefacts in each data layer; None for the embedded demo."""
    root = Path(project).resolve()
    raw = Path(raw_dir).expanduser()
    raw = (raw if raw.is_absolute() else root / raw).resolve()
    if raw == (root / DEMO_RAW_DIR).resolve():
        return None
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.name) or "raw"
    if raw.parent == (root / "data" / "01_raw").resolve():
        return name
    return f"{name}-{hashlib.sha256(str(raw).encode()).hexdigest()[:6]}"


def in_workspace(location: str, workspace: str | None, project: str | Path | None = None) -> str:
    """``data/<layer>/<rest>`` moved to ``data/<layer>/<workspace>/<rest>``; anything else unchanged.

    An absolute ``location`` inside ``project`` (Kedro makes the catalog's paths absolute) moves the same way.
    """
    if workspace is None:
        return location
    text = str(location).replace("\\", "/")
    root = Path(project).resolve().as_posix() + "/" if project is not None else None
    inside = text[len(root) :] if root is not None and text.startswith(root) else text
    match = _DATASET_LAYER.match(inside)
    if match is None:
        return location
    moved = f"{match.group(1)}/{workspace}/{match.group(2)}"
    return root + moved if inside is not text else moved


def relocated(config: Any, workspace: str | None, project: str | Path | None = None) -> Any:
    """A catalog entry with every ``path``/``filepath`` (its inner dataset's included) in ``workspace``."""
    if not isinstance(config, Mapping):
        return config
    return {
        key: in_workspace(value, workspace, project)
        if key in ("path", "filepath") and isinstance(value, str)
        else relocated(value, workspace, project)
        for key, value in config.items()
    }
