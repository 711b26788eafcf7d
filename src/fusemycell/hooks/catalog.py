"""The catalog's datasets rebuilt on the run's locations (:data:`fusemycell.parameters.RUN_LOCATIONS`).

A location a parameter chooses (``raw_dir``, ``inference.output_dir``, ...) is written in the catalog
only as its default. Each run rebuilds those datasets, with Kedro's public ``from_config``, on the
resolved locations, so that datasets and nodes always use the same folders. A catalog that sets such
a location to something else is refused, naming the parameter to set instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusemycell.parameters import RUN_LOCATIONS, ParameterError, ProjectParameters, RunPaths
from fusemycell.workspace import relocated


def relative(path: str) -> str:
    """``path`` relative to the working folder (the project) when it is inside it, as a user reads it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def _location(entry: Any) -> str | None:
    """``filepath`` or ``path`` of a dataset's configuration, its constructor's arguments or its inner dataset's."""
    if not isinstance(entry, dict):
        return None
    for source in (entry, entry.get("kwargs")):
        if not isinstance(source, dict):
            continue
        found = next((source[key] for key in ("filepath", "path") if source.get(key)), None)
        found = found if found is not None else _location(source.get("dataset"))
        if found is not None:
            return str(found)
    return None


def dataset_locations(catalog: Any) -> dict[str, str]:
    """``{name: file or folder}`` of a catalog's datasets, from Kedro's public ``to_config``.

    A dataset wrapped by another (kedro-mlflow's artifact datasets) describes its inner dataset only
    until it is first used: a run takes its locations from its configuration instead
    (:func:`configured_locations`).
    """
    try:
        config = catalog.to_config()[0]
    except Exception:  # noqa: BLE001 - a catalog that cannot describe itself has no locations to show
        return {}
    return {name: found for name, entry in config.items() if (found := _location(entry)) is not None}


def configured_locations(
    conf_catalog: dict[str, Any], paths: RunPaths | None, project: Path | None = None
) -> dict[str, str]:
    """``{name: file or folder}`` of the catalog's configuration, the run's own locations put in (own data:
    in its own folders, :mod:`fusemycell.workspace`)."""
    workspace = paths.workspace if paths is not None else None
    locations = {
        name: found
        for name, entry in conf_catalog.items()
        if (found := _location(relocated(entry, workspace, project or Path.cwd()))) is not None
    }
    if paths is not None:
        for location in RUN_LOCATIONS:
            if location.dataset is not None and location.dataset in locations:
                locations[location.dataset] = paths.location(location.parameter)
    return locations


#: The parameter that chooses the inference run's output folder.
INFERENCE_OUTPUT = "inference.output_dir"


def location_dataset(parameter: str) -> str:
    """The catalog entry whose location ``parameter`` chooses (:data:`~fusemycell.parameters.RUN_LOCATIONS`)."""
    return next(loc.dataset for loc in RUN_LOCATIONS if loc.parameter == parameter and loc.dataset is not None)


def inference_report_dir(conf_catalog: dict[str, Any], project: Path) -> Path | None:
    """Where inference runs write their reports: ``report_dir`` of the catalog entry of the inference output
    (relative to the project), or None when it has none."""
    entry = conf_catalog.get(location_dataset(INFERENCE_OUTPUT))
    report_dir = entry.get("report_dir") if isinstance(entry, dict) else None
    return project / str(report_dir) if report_dir else None


def same_location(first: str, second: str) -> bool:
    """True when two paths name the same file or folder (after ``~``, symlinks and ``..``)."""
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Silence one logger's warnings for a moment."""
    quieted = logging.getLogger(logger_name)
    level = quieted.level
    quieted.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quieted.setLevel(level)


def dataset_from_config(
    name: str, config: dict[str, Any], location: str, project: Path, overrides: dict[str, Any] | None = None
) -> Any:
    """The dataset ``name`` of the catalog entry ``config``, at ``location``.

    A ``report_dir`` is made absolute (Kedro does that to ``path`` and ``filepath`` only).
    """
    from kedro.io import AbstractDataset

    key = next((loc.key for loc in RUN_LOCATIONS if loc.dataset == name), "path")
    rebuilt = {**config, key: location, **(overrides or {})}
    if rebuilt.get("report_dir"):
        rebuilt["report_dir"] = str(project / rebuilt["report_dir"])
    return AbstractDataset.from_config(name, rebuilt)


def _refuse_second_source(name: str, configured: Any, default: str, parameter: str, env: str) -> None:
    """A catalog location other than the default (in any environment, base included) is refused."""
    if configured is None or same_location(str(configured), default):
        return
    raise ParameterError(
        f"the catalog entry {name!r} sets its location to {configured}, but that location is the parameter "
        f"{parameter!r}: keep the catalog's default and set {parameter}: {configured} in "
        f"conf/{env}/parameters.yml (or --params {parameter}=...)"
    )


def rebind_locations(
    catalog: Any,
    conf_catalog: dict[str, Any],
    *,
    paths: RunPaths,
    parameters: ProjectParameters,
    project: Path,
    env: str,
) -> None:
    """Rebuild every dataset of :data:`~fusemycell.parameters.RUN_LOCATIONS` on its resolved location, and
    every other dataset of a data layer in the dataset's own folder when the run is on own data
    (:mod:`fusemycell.workspace`)."""
    from kedro.io import AbstractDataset

    with quiet("kedro.io.data_catalog"):  # "Replacing dataset ..." for every entry set here
        chosen = {location.dataset for location in RUN_LOCATIONS}
        for name, config in conf_catalog.items():
            moved = relocated(config, paths.workspace, project)
            if name not in chosen and moved != config:
                catalog[name] = AbstractDataset.from_config(name, moved)
        for location in RUN_LOCATIONS:
            config = conf_catalog.get(location.dataset or "")
            if location.dataset is None or not isinstance(config, dict) or location.default is None:
                continue
            _refuse_second_source(
                location.dataset, config.get(location.key), str(project / location.default), location.parameter, env
            )
            overrides = {"overwrite": parameters.inference.overwrite} if location.parameter == INFERENCE_OUTPUT else {}
            catalog[location.dataset] = dataset_from_config(
                location.dataset, config, paths.location(location.parameter), project, overrides
            )
