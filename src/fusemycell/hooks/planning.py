"""Before the first node: the output folders are safe and taken, and every input of the run exists.

- An inference run's output folder is checked against its inputs and the raw folder
  (:func:`fusemycell.inference.folders.check_output_folder`); a refused run's report says why. Its
  :class:`~fusemycell.inference.run.InferenceRun` then takes the folder and starts the report, and
  ends it after the last node (or when the run fails; a run stopped by a signal ends it as it exits).
- Every other dataset the run writes that holds a folder lock
  (:class:`~fusemycell.datasets.folder_writer.LockedFolderWriter`) takes it before the first node and
  gives it back after the last (a second run on one folder fails at once).
- A missing input stops the run naming the one command that makes it
  (:mod:`fusemycell.run_planning`, which this hook feeds with the registry and the catalog).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.datasets.folder_writer import LockedFolderWriter
from fusemycell.hooks.catalog import dataset_locations, quiet, relative, same_location
from fusemycell.hooks.parameters import ParameterHooks
from fusemycell.inference.folders import UnsafeOutputError, check_output_folder
from fusemycell.parameters import RUN_LOCATIONS
from fusemycell.preprocessing.split import check_enough_pairs
from fusemycell.run_planning import PipelineShape, check_inputs


class CatalogFacts:
    """What :mod:`fusemycell.run_planning` asks of the catalog: existence, location, the user's own location."""

    def __init__(self, catalog: Any, project: Path, locations: dict[str, str] | None = None) -> None:
        self.catalog = catalog
        self.project = project
        self.locations = locations if locations is not None else dataset_locations(catalog)

    def exists(self, name: str) -> bool:
        try:
            return bool(self.catalog.exists(name))
        except Exception:  # noqa: BLE001 - a dataset that cannot tell is left to fail on load, naming itself
            return True

    def location(self, name: str) -> str | None:
        found = self.locations.get(name)
        return relative(found) if found is not None else None

    def user_chosen(self, name: str) -> bool:
        entry = next((loc for loc in RUN_LOCATIONS if loc.dataset == name and loc.default), None)
        here = self.locations.get(name)
        return entry is not None and here is not None and not same_location(here, str(self.project / entry.default))


def _dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # noqa: BLE001 - a name without a dataset (a free output) has nothing to lock
        return None


class RunPlanningHooks:
    """Safe and locked output folders, and every input there, before the first node (see the module)."""

    def __init__(self, parameters: ParameterHooks) -> None:
        self.parameters = parameters
        self._writers: list[LockedFolderWriter] = []

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        outputs = set(pipeline.all_outputs())
        self._end_runs(RuntimeError("a new run started in this process before the previous one finished"))
        if self.parameters.writes_predictions(pipeline):
            self._start_inference()
        try:
            for name in sorted(outputs):
                dataset = _dataset(catalog, name)
                if isinstance(dataset, LockedFolderWriter):
                    dataset.begin_run()  # takes the folder (a second run fails here)
                    self._writers.append(dataset)
            self._require_inputs(run_params, pipeline, catalog)
            if "volume_split" in outputs:
                self._require_enough_pairs(catalog)
        except Exception as error:  # Kedro calls on_pipeline_error only for errors of the run itself
            self._end_runs(error)
            raise

    def _start_inference(self) -> None:
        """The inference run: refused (its report says why) when its output folder is unsafe, else started."""
        paths, run = self.parameters.paths, self.parameters.new_inference_run()
        if paths is None or run is None:
            return
        try:
            check_output_folder(paths.inference_input, paths.inference_output, paths.raw_dir)
        except UnsafeOutputError as error:  # refused before anything is written: the report says so
            run.refuse(error)
            raise
        run.start()  # takes the folder (a second run is refused here), starts the report
        self.parameters.inference = run

    def _require_inputs(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from kedro.framework.project import pipelines as registry

        from fusemycell.pipeline_registry import PIPELINE_ORDER

        shapes = {
            name: PipelineShape(frozenset(registry[name].inputs()), frozenset(registry[name].all_outputs()))
            for name in PIPELINE_ORDER
            if name in registry
        }
        facts = CatalogFacts(catalog, self.parameters.project_path, self.parameters.locations)
        check_inputs(pipeline.inputs(), shapes, facts, run_params)

    def _require_enough_pairs(self, catalog: Any) -> None:
        """A raw folder too small to split stops the run before any file is written (names only are read)."""
        parameters, paths = self.parameters.parameters, self.parameters.paths
        if parameters is None or paths is None:
            return
        try:
            with quiet("fusemycell.io.pairs"):  # the run's own listing says what it ignores
                listing = catalog.load("raw_pairs")
        except Exception:  # noqa: BLE001 - a missing or empty folder is reported by the run itself, in its words
            return
        split = parameters.preprocessing.split
        check_enough_pairs(
            [pair.channel for pair in listing.values() if pair.is_complete],
            relative(str(paths.raw_dir)),
            val_fraction=split.val_fraction,
            test_fraction=split.test_fraction,
            min_per_split=split.min_per_split,
        )

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end_runs(None)

    @hook_impl
    def on_pipeline_error(self, error: BaseException) -> None:
        self._end_runs(error)

    def _end_runs(self, error: BaseException | None) -> None:
        writers, self._writers = self._writers, []
        run, self.parameters.inference = self.parameters.inference, None
        try:
            for dataset in writers:
                dataset.end_run(error)
        finally:
            if run is not None:
                run.finish(error)
