"""Every parameter of the project, checked at once before anything runs, and the paths a run uses.

:class:`ProjectParameters` is the whole of ``conf/<env>/parameters*.yml`` plus ``--params``: each
group is its pipeline's typed config, and an unknown key anywhere (``inference.overlapp``,
``trainng``, ``raw_dirr``) is an error. :func:`validate_parameters` reports every problem in one
message that names the key, where its value came from (``--params`` or the environment file that
set it) and, for a misspelt key, the closest valid name.

:data:`RUN_LOCATIONS` declares every folder and model file of a run that a parameter chooses
(``raw_dir``, ``inference.input_dir``/``output_dir``/``model_uri``/``onnx_path``,
``training.checkpoint_dir``) and the catalog entry it is the location of; :class:`RunPaths` resolves
them once. The project hook gives the same resolved values to the catalog's datasets and, inside the
typed parameters, to the nodes.

No Kedro import: this module reads YAML files and validates dictionaries.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from fusemycell.configuration import StrictConfig
from fusemycell.errors import UserError
from fusemycell.evaluation.config import EvaluationConfig
from fusemycell.inference.settings import InferenceSettings
from fusemycell.patching.config import PatchingConfig
from fusemycell.preprocessing.config import PreprocessingConfig
from fusemycell.simulation.config import SimulationConfig
from fusemycell.training.config import TrainingConfig
from fusemycell.workspace import in_workspace, workspace_name

#: Where each path goes when the parameters leave it null (relative to the project folder).
DEFAULT_RAW_DIR = "data/01_raw/synthetic"
DEFAULT_INFERENCE_OUTPUT = "data/07_model_output/inference"
DEFAULT_MODEL = "data/06_models/fusemycell_unet.pt"
DEFAULT_CHECKPOINT_DIR = "data/06_models/checkpoints"


Group = TypeVar("Group")


class Validated(Generic[Group]):
    """``Validated[TrainingConfig]``: a node's ``params:`` input, received as that typed group of the run's
    :class:`ProjectParameters` (validated once, locations resolved) from the project hook.

    An annotation only. Kedro 1.7 instantiates a ``params:`` input annotated with a pydantic class itself
    (a second validation of one group, and an object kedro-mlflow would log as one truncated string);
    it leaves this one alone, and the hook hands the node the validated object.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Validated[Group]:
        raise TypeError("Validated[...] is an annotation; nodes receive the parameter group itself")


class ParameterError(UserError):
    """The parameters of a run are invalid; the message lists every problem and where it came from."""


class ProjectParameters(StrictConfig):
    """All parameters of the project: ``conf/base`` merged with ``conf/<env>`` and ``--params``."""

    raw_dir: str = DEFAULT_RAW_DIR
    """Folder of the raw angle/fused pairs (the simulation writes its pairs there)."""
    monitor_interval: float = Field(default=0.5, gt=0)
    """Seconds between two memory samples of the memory monitor."""
    simulation: SimulationConfig | None = None
    """The synthetic acquisitions (``parameters_simulation.yml``)."""
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    """Fingerprint, validation, normalisation, crop, resampling, split (``parameters_preprocessing.yml``)."""
    patching: PatchingConfig = PatchingConfig()
    """Patch size and sampling (``parameters_patching.yml``)."""
    training: TrainingConfig = TrainingConfig()
    """The training engine (``parameters_training.yml``)."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """Scoring of the test volumes (``parameters_evaluation.yml``)."""
    inference: InferenceSettings = InferenceSettings()
    """Applying a model, and its folders (``parameters_inference.yml``)."""


class ParameterOrigins:
    """Which source set a parameter: ``--params``, or the last YAML file (environment over base) naming it."""

    def __init__(
        self,
        conf_source: str | Path,
        base_env: str = "base",
        env: str | None = None,
        runtime_params: Mapping[str, Any] | None = None,
    ):
        self.conf_source = Path(conf_source)
        self.runtime_params = dict(runtime_params or {})
        self.files: list[tuple[str, dict[str, Any]]] = []
        for folder in dict.fromkeys([base_env, env]):  # environment files last: they win
            if folder:
                self.files += _parameter_files(self.conf_source, folder)

    def origin(self, loc: Sequence[str | int]) -> str:
        """``--params``, ``conf/mac/parameters.yml``, ... for the parameter at ``loc`` (or its closest parent)."""
        keys = [str(k) for k in loc if not isinstance(k, int)]
        for depth in range(len(keys), 0, -1):
            if _lookup(self.runtime_params, keys[:depth]):
                return "--params"
            for name, content in reversed(self.files):
                if _lookup(content, keys[:depth]):
                    return name
        return "the defaults"


def _parameter_files(conf_source: Path, env: str) -> list[tuple[str, dict[str, Any]]]:
    folder = conf_source / env
    if not folder.is_dir():
        return []
    found = []
    for path in sorted({*folder.glob("**/parameters*.yml"), *folder.glob("**/parameters*.yaml")}):
        try:
            content = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):  # Kedro's own loader reports unreadable files
            continue
        if isinstance(content, dict):
            found.append((f"{conf_source.name}/{path.relative_to(conf_source).as_posix()}", content))
    return found


def _lookup(tree: Mapping[str, Any], keys: Sequence[str]) -> bool:
    """True when ``tree`` sets ``keys`` (nested dicts, or a dotted key as ``--params`` may hold)."""
    if not keys:
        return True
    dotted = ".".join(keys)
    if dotted in tree:
        return True
    head, *rest = keys
    value = tree.get(head)
    return isinstance(value, Mapping) and _lookup(value, rest)


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The config class that holds the last key of ``loc`` (list indices skipped)."""
    current: Any = model
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        field = current.model_fields.get(key) if isinstance(current, type) else None
        if field is None:
            return None
        current = _config_class(field.annotation)
        if current is None:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _config_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):  # Optional[X], tuple[X, ...]
        found = _config_class(argument)
        if found is not None:
            return found
    return None


def _problem_line(error: Mapping[str, Any], origins: ParameterOrigins | None) -> str:
    loc = tuple(error["loc"])
    name = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in loc).replace(".[", "[")
    where = f" (set in {origins.origin(loc)})" if origins is not None else ""
    if error["type"] == "extra_forbidden":
        holder = _model_at(ProjectParameters, loc)
        choices = list(holder.model_fields) if holder is not None else []
        close = difflib.get_close_matches(str(loc[-1]), choices, n=1, cutoff=0.6)
        prefix = name[: -len(str(loc[-1]))]
        hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys here: {', '.join(choices)}"
        return f"  - {name}{where}: unknown parameter{hint}"
    value = f" = {error['input']!r}" if not isinstance(error.get("input"), Mapping) else ""
    return f"  - {name}{value}{where}: {error['msg']}"


#: A list of numbers as one command-line word: ``64x256x256``, ``1.0x0.6x0.6`` (Kedro's ``--params`` splits at commas).
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBERS_BY_X = re.compile(rf"^{_NUMBER}(?:\s*[xX×]\s*{_NUMBER})+$")


def _accepts_a_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (tuple, list):
        return True
    return any(_accepts_a_list(argument) for argument in typing.get_args(annotation))


def _as_list(text: str) -> list[Any] | None:
    """``64x256x256`` or ``"64 256 256"`` or ``"[surface_distance depth_z]"`` as a list; None if it is not one."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        stripped = stripped[1:-1].strip()
    if _NUMBERS_BY_X.match(stripped):
        parts = re.split(r"\s*[xX×]\s*", stripped)
    elif len(stripped.split()) > 1:
        parts = stripped.split()
    else:
        return None
    return [yaml.safe_load(part) for part in parts]


def with_command_line_lists(params: Mapping[str, Any], model: type[BaseModel] = ProjectParameters) -> dict[str, Any]:
    """``params`` with every list parameter given as one word (``--params``) turned into the list.

    Kedro 1.7's ``--params`` splits its value at commas, so ``inference.tile_zyx=[64,256,256]`` cannot
    be written there; a parameter that takes a list (tile and patch sizes, voxel sizes, intensity
    ranges, channel names) also takes ``64x256x256`` (numbers joined by ``x``) or, quoted, the items
    separated by spaces (``"patching.position.channels=surface_distance depth_z"``). Other values,
    and strings that are not such lists (``auto``), are left as they are.
    """
    converted = dict(params)
    for name, field in model.model_fields.items():
        value = converted.get(name)
        if isinstance(value, str) and _accepts_a_list(field.annotation):
            items = _as_list(value)
            if items is not None:
                converted[name] = items
        elif isinstance(value, Mapping):
            nested = _config_class(field.annotation)
            if nested is not None:
                converted[name] = with_command_line_lists(value, nested)
    return converted


def validate_parameters(params: Mapping[str, Any], origins: ParameterOrigins | None = None) -> ProjectParameters:
    """Every parameter group and every top-level key, checked at once.

    Raises
    ------
    ParameterError
        One line per problem, e.g. ``inference.overlapp (set in --params): unknown parameter;
        did you mean 'inference.overlap'?``.
    """
    try:
        return ProjectParameters.model_validate(dict(params))
    except ValidationError as exc:
        lines = [_problem_line(error, origins) for error in exc.errors()]
        raise ParameterError(
            f"invalid parameters ({len(lines)} problem{'s' if len(lines) != 1 else ''}):\n" + "\n".join(lines)
        ) from None


def inference_output_folder(params: Mapping[str, Any], project_path: str | Path) -> Path | None:
    """The inference output folder that ``params`` name, read leniently (they may be invalid elsewhere).

    For the report of a run refused for its parameters; None when the folder cannot be told.
    """
    inference = params.get("inference", {})
    if not isinstance(inference, Mapping):
        return None
    value = inference.get("output_dir") or DEFAULT_INFERENCE_OUTPUT
    if not isinstance(value, str):
        return None
    path = Path(value).expanduser()
    return (path if path.is_absolute() else Path(project_path) / path).resolve()


@dataclass(frozen=True)
class RunLocation:
    """A folder or file of a run that a parameter chooses: the one declaration of where it is and who reads it."""

    parameter: str
    """Dotted parameter name (``inference.output_dir``)."""
    field: str
    """The :class:`RunPaths` field holding its resolved value."""
    default: str | None
    """Where it is when the parameter is null, relative to the project (None: derived from another location)."""
    dataset: str | None = None
    """The catalog entry whose location it is (its catalog path must be this default)."""
    key: str = "path"
    """That entry's location key (``path`` or ``filepath``)."""


#: Every location of a run, in one place: the project hook resolves them, rebuilds the datasets on them and
#: hands the nodes parameters that carry the resolved values.
RUN_LOCATIONS = (
    RunLocation("raw_dir", "raw_dir", DEFAULT_RAW_DIR, "raw_pairs"),
    RunLocation("inference.input_dir", "inference_input", DEFAULT_RAW_DIR, "inference_inputs"),
    RunLocation("inference.output_dir", "inference_output", DEFAULT_INFERENCE_OUTPUT, "inference_outputs"),
    RunLocation("inference.model_uri", "model_uri", DEFAULT_MODEL, "inference_model", "filepath"),
    RunLocation("inference.onnx_path", "onnx_path", None),
    RunLocation("training.checkpoint_dir", "checkpoint_dir", DEFAULT_CHECKPOINT_DIR),
)


def _sibling_onnx(model_uri: str) -> str:
    return model_uri[: -len(".pt")] + ".onnx" if model_uri.endswith(".pt") else model_uri + ".onnx"


def _is_uri(value: str) -> bool:
    return "://" in value or value.startswith(("runs:/", "models:/"))


@dataclass(frozen=True)
class RunPaths:
    """The folders and model files of one run (:data:`RUN_LOCATIONS`), resolved (absolute, symlinks followed)."""

    raw_dir: Path
    """Raw angle/fused pairs."""
    inference_input: Path
    """Single views to predict: a folder, or one file."""
    inference_output: Path
    """Where predictions are written."""
    model_uri: str
    """Model file (absolute) or MLflow URI."""
    onnx_path: str
    """ONNX export for ``backend: onnx`` (absolute path or MLflow URI)."""
    checkpoint_dir: Path
    """Training checkpoints (the last complete epoch, the best model)."""
    workspace: str | None = None
    """The dataset's folder in each data layer (:mod:`fusemycell.workspace`); None for the embedded demo."""

    @classmethod
    def from_parameters(cls, params: ProjectParameters, project_path: str | Path) -> RunPaths:
        """Apply the documented defaults, relative to the project folder."""
        root = Path(project_path)

        def local(value: str, follow_links: bool = True) -> Path:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else root / path
            # one linked input file keeps its own name (its prediction is named after it)
            return path.resolve() if follow_links or not path.is_file() else Path(os.path.abspath(path))

        inference = params.inference
        raw_dir = local(params.raw_dir)
        workspace = workspace_name(raw_dir, root)  # own data: its artefacts in folders of its own

        def default(location: str) -> str:
            return in_workspace(location, workspace)

        model = inference.model_uri or default(DEFAULT_MODEL)
        model_uri = model if _is_uri(model) else str(local(model))
        onnx = inference.onnx_path or _sibling_onnx(model_uri)
        return cls(
            raw_dir=raw_dir,
            inference_input=local(inference.input_dir, follow_links=False) if inference.input_dir else raw_dir,
            inference_output=local(inference.output_dir or default(DEFAULT_INFERENCE_OUTPUT)),
            model_uri=model_uri,
            onnx_path=onnx if _is_uri(onnx) else str(local(onnx)),
            # the base configuration writes the default checkpoint folder out: own data gets its own too
            checkpoint_dir=local(default(params.training.checkpoint_dir or DEFAULT_CHECKPOINT_DIR)),
            workspace=workspace,
        )

    def location(self, parameter: str) -> str:
        """The resolved value of the location chosen by ``parameter`` (a name of :data:`RUN_LOCATIONS`)."""
        field = next(location.field for location in RUN_LOCATIONS if location.parameter == parameter)
        return str(getattr(self, field))

    def apply(self, params: ProjectParameters) -> ProjectParameters:
        """``params`` with every location replaced by its resolved value: what the nodes receive."""
        inference = params.inference.model_copy(
            update={
                "input_dir": str(self.inference_input),
                "output_dir": str(self.inference_output),
                "model_uri": self.model_uri,
                "onnx_path": self.onnx_path,
            }
        )
        training = params.training.model_copy(update={"checkpoint_dir": str(self.checkpoint_dir)})
        return params.model_copy(update={"raw_dir": str(self.raw_dir), "inference": inference, "training": training})


def parameter_value(params: ProjectParameters, name: str) -> Any:
    """The value of the dotted parameter ``name`` (``training``, ``training.model``, ``raw_dir``).

    Raises
    ------
    KeyError
        When ``params`` has no such parameter.
    """
    value: Any = params
    for part in name.split("."):
        if not isinstance(value, BaseModel) or part not in type(value).model_fields:
            raise KeyError(name)
        value = getattr(value, part)
    return value
