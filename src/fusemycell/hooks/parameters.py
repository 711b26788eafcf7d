"""Parameters checked once, before anything runs; the nodes receive the typed, resolved result.

- After the context is created: all parameters (base, environment, ``--params``) are validated
  against :class:`fusemycell.parameters.ProjectParameters`; an unknown key or a bad value stops the
  run before its first node, naming it, where it was set, and the closest valid name (an inference
  run's report then says it was refused, and why). :class:`~fusemycell.parameters.RunPaths` decides
  every location of the run once.
- After the catalog is created: the datasets whose location is a parameter are rebuilt on the
  resolved locations (:mod:`fusemycell.hooks.catalog`).
- Before each node: its ``params:`` inputs are replaced by the typed objects of that one validated
  set (``params:training`` is a :class:`~fusemycell.training.config.TrainingConfig` with an absolute
  ``checkpoint_dir``), through Kedro's public ``before_node_run`` return value. The catalog keeps
  Kedro's own dictionaries, which kedro-mlflow logs as the run's parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.hooks.catalog import (
    INFERENCE_OUTPUT,
    configured_locations,
    inference_report_dir,
    location_dataset,
    rebind_locations,
)
from fusemycell.inference.run import InferenceRun
from fusemycell.parameters import (
    RUN_LOCATIONS,
    ParameterError,
    ParameterOrigins,
    ProjectParameters,
    RunPaths,
    inference_output_folder,
    parameter_value,
    validate_parameters,
    with_command_line_lists,
)

logger = logging.getLogger(__name__)


def _origins(loader: Any) -> ParameterOrigins:
    return ParameterOrigins(
        str(getattr(loader, "conf_source", "conf")),
        getattr(loader, "base_env", None) or "base",
        getattr(loader, "env", None) or getattr(loader, "default_run_env", None),
        getattr(loader, "runtime_params", None) or {},
    )


def typed_inputs(parameters: ProjectParameters, names: list[str] | Any) -> dict[str, Any]:
    """``{"params:x": typed value}`` for the ``params:`` names among ``names`` that ``parameters`` holds."""
    typed = {}
    for name in names:
        if not name.startswith("params:"):
            continue
        try:
            typed[name] = parameter_value(parameters, name[len("params:") :])
        except KeyError:  # a parameter of no group (none in this project): Kedro's value stays
            continue
    return typed


class ParameterHooks:
    """Every parameter checked before anything runs; one resolved set of locations for catalog and nodes.

    :attr:`parameters` is the run's :class:`~fusemycell.parameters.ProjectParameters` with every
    location resolved (None while the parameters are invalid), :attr:`paths` those locations, and
    :attr:`inference` the :class:`~fusemycell.inference.run.InferenceRun` of a run that predicts
    (started and finished by :class:`~fusemycell.hooks.planning.RunPlanningHooks`; the summary names its report).
    """

    def __init__(self) -> None:
        self.paths: RunPaths | None = None
        self.parameters: ProjectParameters | None = None
        self.project_path = Path.cwd()
        self._env = "<env>"
        self._invalid: ParameterError | None = None
        self._invalid_output: Path | None = None
        self._conf_catalog: dict[str, Any] = {}
        self._tagged = False
        self.locations: dict[str, str] | None = None
        """``{dataset: file or folder}`` of the run's catalog (:func:`.catalog.configured_locations`)."""
        self.inference: InferenceRun | None = None
        """The inference run of this session's pipeline run, if it predicts."""

    def writes_predictions(self, pipeline: Any) -> bool:
        """True when ``pipeline`` writes the inference output folder."""
        return location_dataset(INFERENCE_OUTPUT) in set(pipeline.all_outputs())

    def new_inference_run(self, output: Path | None = None) -> InferenceRun | None:
        """An inference run into ``output`` (default: the validated ``inference.output_dir``), reporting where the
        catalog says; None when the output folder is not known."""
        output = output if output is not None else (self.paths.inference_output if self.paths else None)
        if output is None:
            return None
        return InferenceRun(output, report_dir=inference_report_dir(self._conf_catalog, self.project_path))

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        self.project_path = Path(getattr(context, "project_path", Path.cwd()))
        self._env = getattr(loader, "env", None) or "<env>"
        self.paths = self.parameters = self._invalid = None
        self._tagged = False
        try:
            validated = validate_parameters(with_command_line_lists(context.params), _origins(loader))
        except ParameterError as error:
            # raised in before_pipeline_run, where the run's pipelines are known: an inference run's
            # report (of the output folder the parameters name) then says it was refused, and why
            self._invalid = error
            self._invalid_output = inference_output_folder(context.params, self.project_path)
            return
        self.paths = RunPaths.from_parameters(validated, self.project_path)
        self.parameters = self.paths.apply(validated)

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_catalog: dict[str, Any]) -> None:
        self._conf_catalog = dict(conf_catalog or {})
        self.locations = configured_locations(self._conf_catalog, self.paths, self.project_path)
        if self.paths is not None and self.parameters is not None:
            rebind_locations(
                catalog,
                self._conf_catalog,
                paths=self.paths,
                parameters=self.parameters,
                project=self.project_path,
                env=self._env,
            )

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any) -> None:
        """Invalid parameters stop the run here (an inference run's report says it was refused)."""
        if self._invalid is None:
            return
        error, self._invalid = self._invalid, None
        if self.writes_predictions(pipeline):
            self._refuse_in_report(error)
        raise error

    @hook_impl
    def before_node_run(self, node: Any, inputs: dict[str, Any]) -> dict[str, Any] | None:
        """The node's ``params:`` inputs as the typed objects of the validated parameters."""
        if self.parameters is None:
            return None
        self._tag_locations()
        return typed_inputs(self.parameters, list(inputs)) or None

    def _tag_locations(self) -> None:
        """The run's resolved locations as tags of its MLflow run (its parameters keep what was configured)."""
        if self._tagged or self.paths is None:
            return
        self._tagged = True
        from fusemycell.tracking import set_tags

        set_tags({f"location.{loc.parameter}": self.paths.location(loc.parameter) for loc in RUN_LOCATIONS})

    def _refuse_in_report(self, error: ParameterError) -> None:
        """The report of the output folder the (invalid) parameters name says the run was refused."""
        run = self.new_inference_run(self._invalid_output)
        if run is None:
            return
        try:
            run.refuse(error)
        except Exception as exc:  # noqa: BLE001 - the parameters' error is the one to show
            logger.warning("could not write the inference report of %s: %s", self._invalid_output, exc)
