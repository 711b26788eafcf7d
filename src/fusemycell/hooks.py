"""Project hooks: a check that the chosen environment exists, the memory monitor (peak RSS and
accelerator memory per node, logged and sent to MLflow) and a summary of where a run put things."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.inference.folders import UnsafeOutputError, check_output_folder
from fusemycell.memory import MemoryPeak
from fusemycell.parameters import (
    DEFAULT_INFERENCE_OUTPUT,
    DEFAULT_MODEL,
    DEFAULT_RAW_DIR,
    ParameterError,
    ParameterOrigins,
    ProjectParameters,
    RunPaths,
    inference_output_folder,
    validate_parameters,
    with_command_line_lists,
)
from fusemycell.tracking import log_metrics

logger = logging.getLogger(__name__)

#: Seconds between two memory samples, unless ``monitor_interval`` is set in the parameters.
DEFAULT_INTERVAL_S = 0.5


@dataclass
class NodeMemory:
    """Peak memory while one node ran."""

    node: str
    peak_rss_mb: float
    peak_device_mb: float
    samples: int


class UnknownEnvironmentError(ValueError):
    """``--env`` names an environment that has no folder under ``conf/``."""


class EnvironmentCheckHooks:
    """Stop at once, with the list of environments, when ``--env`` names one that does not exist.

    Without it Kedro runs with the base configuration alone and kedro-mlflow falls back
    to a ``./mlruns`` store that MLflow refuses, an error that says nothing about the typo.
    """

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        conf = Path(str(getattr(loader, "conf_source", "")))
        env = getattr(loader, "env", None) or getattr(loader, "default_run_env", None)
        if not env or not conf.is_dir() or (conf / env).is_dir():
            return
        base = getattr(loader, "base_env", None) or "base"
        known = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != base and not p.name.startswith("."))
        raise UnknownEnvironmentError(
            f"environment {env!r} not found: {conf / env} does not exist. "
            f"Environments of this project: {', '.join(known)} (e.g. --env mac on a laptop, --env cloud on GPUs)"
        )

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Check the training device before any node runs, not hours later when training starts.

        ``--env cloud`` on a machine without a CUDA GPU would otherwise run simulation,
        preprocessing and patching first, then fail.
        """
        if "params:training" not in pipeline.inputs():
            return
        from fusemycell.training.config import TrainingConfig

        try:
            training = TrainingConfig.model_validate(catalog.load("params:training") or {})
        except Exception:  # noqa: BLE001 - invalid parameters are reported by ParameterHooks, naming them
            return
        from fusemycell.devices import resolve_device

        resolve_device(str(training.device))


#: Catalog entries whose location is a parameter: (catalog key, RunPaths field, parameter, default).
#: The catalog's value must be that default; anything else would be a second source of the location.
PATH_DATASETS = {
    "raw_pairs": ("path", "raw_dir", "raw_dir", DEFAULT_RAW_DIR),
    "inference_inputs": ("path", "inference_input", "inference.input_dir", DEFAULT_RAW_DIR),
    "inference_outputs": ("path", "inference_output", "inference.output_dir", DEFAULT_INFERENCE_OUTPUT),
    "inference_model": ("filepath", "model_uri", "inference.model_uri", DEFAULT_MODEL),
}


class ParameterHooks:
    """Every parameter checked before anything runs; one resolved set of paths for catalog and nodes.

    - After the context is created: all parameters (base, environment, ``--params``) are validated
      against :class:`fusemycell.parameters.ProjectParameters`; an unknown key or a bad value stops
      the run before its first node, naming it, where it was set, and the closest valid name (an
      inference run's report then says it was refused, and why).
    - After the catalog is created: :class:`~fusemycell.parameters.RunPaths` decides the raw folder,
      the inference folders and the model file once; the datasets of :data:`PATH_DATASETS` are
      rebuilt on them and the ``params:`` entries the nodes read carry the same resolved values.
    - Around a run: every dataset the pipeline writes that holds a folder lock takes it before the
      first node and gives it back after the last (a second run on one folder fails at once).
    """

    def __init__(self) -> None:
        self.paths: RunPaths | None = None
        self.parameters: ProjectParameters | None = None
        self._project_path = Path.cwd()
        self._env = "<env>"
        self._writers: list[Any] = []
        self._invalid: ParameterError | None = None
        self._invalid_output: Path | None = None
        self._conf_catalog: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        origins = ParameterOrigins(
            str(getattr(loader, "conf_source", "conf")),
            getattr(loader, "base_env", None) or "base",
            getattr(loader, "env", None) or getattr(loader, "default_run_env", None),
            getattr(loader, "runtime_params", None) or {},
        )
        self._project_path = Path(getattr(context, "project_path", Path.cwd()))
        self._env = getattr(loader, "env", None) or "<env>"
        self.paths = self.parameters = self._invalid = None
        try:
            self.parameters = validate_parameters(with_command_line_lists(context.params), origins)
        except ParameterError as error:
            # raised in before_pipeline_run, where the run's pipelines are known: an inference run's
            # report (of the output folder the parameters name) then says it was refused, and why
            self._invalid = error
            self._invalid_output = inference_output_folder(context.params, self._project_path)
            return
        self.paths = RunPaths.from_parameters(self.parameters, self._project_path)

    @hook_impl
    def after_catalog_created(self, catalog: Any, conf_catalog: dict[str, Any], parameters: dict[str, Any]) -> None:
        self._conf_catalog = dict(conf_catalog or {})
        if self.paths is None or self.parameters is None:
            return
        from kedro.io import AbstractDataset

        with _quiet("kedro.io.data_catalog"):  # "Replacing dataset ..." for every entry set here
            self._rebind(catalog, conf_catalog, parameters, AbstractDataset)

    def _rebind(self, catalog: Any, conf_catalog: dict[str, Any], parameters: dict[str, Any], factory: Any) -> None:
        assert self.paths is not None and self.parameters is not None
        for name, (key, attribute, parameter, default) in PATH_DATASETS.items():
            config = conf_catalog.get(name)
            if not isinstance(config, dict):
                continue
            self._refuse_second_source(name, config.get(key), str(self._project_path / default), parameter)
            rebuilt = {**config, key: str(getattr(self.paths, attribute))}
            if name == "inference_outputs":
                rebuilt["overwrite"] = self.parameters.inference.overwrite
                if rebuilt.get("report_dir"):  # Kedro makes only `path`/`filepath` absolute
                    rebuilt["report_dir"] = str(self._project_path / rebuilt["report_dir"])
            catalog[name] = factory.from_config(name, rebuilt)
        resolved = self.paths.resolved_parameters(with_command_line_lists(parameters.get("parameters") or {}))
        for name, value in resolved.items():
            _set_parameter(catalog, name, value)
        catalog["parameters"] = resolved

    def _refuse_second_source(self, name: str, configured: Any, default: str, parameter: str) -> None:
        """A catalog path other than the default (in any environment, base included) is refused."""
        if configured is None or _same_location(str(configured), default):
            return
        raise ParameterError(
            f"the catalog entry {name!r} sets its location to {configured}, but that location is the parameter "
            f"{parameter!r}: keep the catalog's default and set {parameter}: {configured} in "
            f"conf/{self._env}/parameters.yml (or --params {parameter}=...)"
        )

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        outputs = set(pipeline.all_outputs())
        if self._invalid is not None:
            error, self._invalid = self._invalid, None
            if "inference_outputs" in outputs:
                self._refuse_in_report(error)
            raise error
        if "inference_outputs" in outputs and self.paths is not None:
            try:
                check_output_folder(self.paths.inference_input, self.paths.inference_output, self.paths.raw_dir)
            except UnsafeOutputError as error:  # refused before anything is written: the report says so
                dataset = _dataset(catalog, "inference_outputs")
                if hasattr(dataset, "refuse"):
                    dataset.refuse(error)
                raise
        self._writers = []
        try:
            for name in sorted(outputs):
                dataset = _dataset(catalog, name)
                if hasattr(dataset, "begin_run"):
                    dataset.begin_run()  # takes the folder (a second run fails here), voids an old report
                    self._writers.append(dataset)
            self._require_inputs(run_params, pipeline, catalog)
        except Exception as error:  # Kedro calls on_pipeline_error only for errors of the run itself
            self._end_runs(error)
            raise

    def _refuse_in_report(self, error: ParameterError) -> None:
        """The report of the output folder the (invalid) parameters name says the run was refused."""
        config = self._conf_catalog.get("inference_outputs")
        if self._invalid_output is None or not isinstance(config, dict):
            return
        from kedro.io import AbstractDataset

        rebuilt = {**config, "path": str(self._invalid_output)}
        if rebuilt.get("report_dir"):
            rebuilt["report_dir"] = str(self._project_path / rebuilt["report_dir"])
        try:
            dataset = AbstractDataset.from_config("inference_outputs", rebuilt)
            if hasattr(dataset, "refuse"):
                dataset.refuse(error)
        except Exception as exc:  # noqa: BLE001 - the parameters' error is the one to show
            logger.warning("could not write the inference report of %s: %s", self._invalid_output, exc)

    def _require_inputs(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        """Stop before the first node when an input of the run does not exist, naming the one command that makes it."""
        from kedro.framework.project import pipelines as registry

        from fusemycell.pipeline_registry import PIPELINE_ORDER

        producers = {name: set(registry[name].all_outputs()) for name in PIPELINE_ORDER if name in registry}
        missing, chain = _missing_chain(
            pipeline, catalog, producers=producers, registry=registry, seen=set(), project=self._project_path
        )
        unmade = [(name, where) for name, where, producer in missing if producer is None]
        if unmade:
            settings = sorted({PATH_DATASETS[name][2] for name, _ in unmade if name in PATH_DATASETS})
            raise MissingInputError(
                f"{_names(unmade)} not found"
                + (f": check {', '.join(settings)}" if settings else "; no pipeline of this project makes it")
            )
        if missing:
            requested = [p for p in run_params.get("pipeline_names") or [] if p != "__default__"]
            command = hint_command([*chain, *requested], run_params)
            raise MissingInputError(f"{_names([m[:2] for m in missing])} not found yet: run {command}")

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._end_runs(None)

    @hook_impl
    def on_pipeline_error(self, error: BaseException) -> None:
        self._end_runs(error)

    def _end_runs(self, error: BaseException | None) -> None:
        writers, self._writers = self._writers, []
        for dataset in writers:
            dataset.end_run(error)


class MissingInputError(RuntimeError):
    """An input of the run does not exist; the message names the command that makes it."""


def _names(missing: list[tuple[str, str]]) -> str:
    return ", ".join(f"{name} ({where})" if where else name for name, where in missing)


def _missing_chain(
    pipeline: Any, catalog: Any, *, producers: dict[str, set[str]], registry: Any, seen: set[str], project: Path
) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """The run's free inputs that do not exist, and the pipelines (in data-flow order) that make them."""
    missing: list[tuple[str, str, str | None]] = []
    chain: list[str] = []
    for name in sorted(pipeline.inputs()):
        if name.startswith("params:") or name == "parameters" or name in seen or _exists(catalog, name):
            continue
        seen.add(name)
        made_as = _SAME_FILE_AS.get(name, name) if _same_file(catalog, name) else name
        producer = next((p for p, outputs in producers.items() if made_as in outputs), None)
        if _user_location(catalog, name, project):  # your own folder or model: no pipeline should make it for you
            producer = None
        missing.append((name, _location(catalog, name) or "", producer))
        if producer is None:
            continue
        _, upstream = _missing_chain(
            registry[producer], catalog, producers=producers, registry=registry, seen=seen, project=project
        )
        chain += [*upstream, producer]
    order = list(producers)
    return missing, sorted(set(chain), key=order.index)


#: Inputs that are, by default, the very files another dataset writes (the model applied is the one trained).
_SAME_FILE_AS = {"inference_model": "trained_model", "inference_inputs": "raw_pairs"}


def _same_file(catalog: Any, name: str) -> bool:
    other = _SAME_FILE_AS.get(name)
    return other is not None and _location(catalog, name) == _location(catalog, other)


def _user_location(catalog: Any, name: str, project: Path) -> bool:
    """True when a path dataset points elsewhere than its default (the user's own data or model)."""
    entry = PATH_DATASETS.get(name)
    location = _location(catalog, name)
    return entry is not None and location is not None and not _same_location(location, str(project / entry[3]))


def _exists(catalog: Any, name: str) -> bool:
    try:
        return bool(catalog.exists(name))
    except Exception:  # noqa: BLE001 - a dataset that cannot tell is left to fail on load, naming itself
        return True


def hint_command(pipelines: list[str], run_params: dict[str, Any]) -> str:
    """``'kedro run --pipelines a,b --env mac --params raw_dir=...'``: the user's own options kept."""
    words = ["kedro", "run", "--pipelines", ",".join(dict.fromkeys(pipelines))]
    if run_params.get("env"):
        words += ["--env", str(run_params["env"])]
    raw_dir = (run_params.get("runtime_params") or {}).get("raw_dir")
    if raw_dir:
        words += ["--params", f"raw_dir={raw_dir}"]
    return "'" + " ".join(words) + "'"


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence one logger's warnings for a moment."""
    quieted = logging.getLogger(logger_name)
    level = quieted.level
    quieted.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quieted.setLevel(level)


def _dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # noqa: BLE001 - a name without a dataset (a free output) has nothing to lock
        return None


def _set_parameter(catalog: Any, name: str, value: Any) -> None:
    """``params:name`` and, for a dict, every ``params:name.key`` below it (as Kedro adds them)."""
    catalog[f"params:{name}"] = value
    if isinstance(value, dict):
        for key, item in value.items():
            _set_parameter(catalog, f"{name}.{key}", item)


def _same_location(first: str, second: str) -> bool:
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


class _Sampler(threading.Thread):
    """Samples :class:`~fusemycell.memory.MemoryPeak` (this process and its workers) every ``interval`` seconds."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.stopped = threading.Event()
        self.peak = MemoryPeak(children=True)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.peak.sample()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
        self.peak.sample()


class MemoryMonitorHooks:
    """Samples memory while each node runs and while its outputs are saved; logs the peak per node.

    Heavy work often runs inside a dataset's ``save`` (lazy plans written plane by
    plane: predictions, normalised volumes, patch stores, the ONNX export), after
    Kedro's ``after_node_run``. Sampling therefore goes on until the node's last
    output is saved (``after_dataset_saved``), so the peak is the real one; a save
    that fails ends it in ``on_pipeline_error``, which names the dataset.
    The sampling interval is the ``monitor_interval`` parameter (seconds). Peaks are
    kept in :attr:`peaks` and logged to the active MLflow run as
    ``memory.<pipeline>.<node>.peak_rss_mb`` (and ``peak_device_mb`` on CUDA or MPS).
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL_S):
        self.interval = interval
        self.peaks: dict[str, NodeMemory] = {}
        self._samplers: dict[str, _Sampler] = {}
        self._unsaved: dict[str, set[str]] = {}
        self._saving: dict[str, str] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Read ``monitor_interval`` from the parameters."""
        try:
            value = context.params.get("monitor_interval", self.interval)
            self.interval = float(value) if value else self.interval
        except Exception:  # noqa: BLE001 - parameters that fail to load or validate are reported elsewhere
            return

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        """Start sampling."""
        sampler = _Sampler(self.interval)
        self._samplers[node.name] = sampler
        self._unsaved[node.name] = set(getattr(node, "outputs", None) or [])
        sampler.start()

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        """A node without outputs is done; the others are sampled on while their outputs are saved."""
        if not self._unsaved.get(node.name):
            self._finish(node.name)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, node: Any) -> None:
        """Remember what is being saved (named if the save fails)."""
        self._saving[node.name] = dataset_name

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, node: Any) -> None:
        """The node's last saved output ends its measurement."""
        unsaved = self._unsaved.get(node.name)
        if unsaved is None:
            return
        unsaved.discard(dataset_name)
        if not unsaved:
            self._finish(node.name)

    @hook_impl
    def on_node_error(self, node: Any) -> None:
        """A failing node's peak is recorded too (it may be why it failed)."""
        self._finish(node.name)

    @hook_impl
    def on_pipeline_error(self) -> None:
        """A save that failed: its node's peak is recorded, naming the dataset."""
        for name in list(self._samplers):
            dataset = self._saving.get(name)
            if dataset is not None:
                logger.error("memory: %s failed while saving %s", name, dataset)
            self._finish(name)

    def _finish(self, name: str) -> None:
        sampler = self._samplers.pop(name, None)
        self._unsaved.pop(name, None)
        self._saving.pop(name, None)
        if sampler is None:
            return
        sampler.stop()
        peak = sampler.peak
        record = NodeMemory(name, peak.rss_mb, peak.peak_device_mb, peak.samples)
        self.peaks[name] = record
        device = f", accelerator {record.peak_device_mb:.0f} MB" if record.peak_device_mb else ""
        logger.info("memory: %s peaked at %.0f MB RSS%s (run and save)", name, record.peak_rss_mb, device)
        metrics = {f"memory.{name}.peak_rss_mb": record.peak_rss_mb}
        if record.peak_device_mb:
            metrics[f"memory.{name}.peak_device_mb"] = record.peak_device_mb
        log_metrics(metrics)


#: Artefacts a user looks for after a run, in the order they are listed.
SUMMARY_DATASETS = (
    ("raw_pairs", "raw pairs"),
    ("normalized_volumes", "preprocessed volumes"),
    ("fingerprint_table", "fingerprint"),
    ("patch_store_train", "training patches"),
    ("trained_model", "model"),
    ("onnx_model", "ONNX export"),
    ("bioimageio_model", "bioimage.io package"),
    ("learning_curves", "learning curves"),
    ("test_predictions", "test predictions"),
    ("evaluation_by_channel", "metrics per channel"),
    ("evaluation_summary_figure", "model vs baselines"),
    ("inference_outputs", "predictions"),
)


class RunSummaryHooks:
    """After a successful run, print where its artefacts and its MLflow run are.

    When the run evaluated a model, the summary also gives the test N_SSIM per
    channel of the model and of both baselines.
    """

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        outputs = set(pipeline.all_outputs())
        lines = []
        for name, label in SUMMARY_DATASETS:
            location = _location(catalog, name) if name in outputs else None
            if location and not Path(location).exists() and Path(f"{location}.not-exported.txt").is_file():
                location = f"not exported, see {location}.not-exported.txt"
            if location:
                lines.append(f"  {label + ':':<22}{location}")
        report = _report_file(catalog) if "inference_outputs" in outputs else None
        if report is not None:
            lines.append(f"  {'inference report:':<22}{_relative(str(report))}")
        if "evaluation_by_channel" in outputs:
            lines += _nssim_lines(catalog)
        run = _mlflow_run()
        if run is not None:
            lines.append(f"  {'MLflow run:':<22}{run}  (browse: kedro mlflow ui)")
        if lines:
            print("\nfusemycell run finished:\n" + "\n".join(lines) + "\n  lineage graph:        kedro viz run\n")


def _location(catalog: Any, name: str) -> str | None:
    try:
        description = catalog.get(name)._describe()
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return None
    inner = description.get("dataset") if isinstance(description.get("dataset"), dict) else {}
    for source in (description, inner):
        for key in ("filepath", "path"):
            if source.get(key):
                return _relative(str(source[key]))
    return None


def _report_file(catalog: Any) -> Path | None:
    try:
        return catalog.get("inference_outputs").report_file
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return None


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _nssim_lines(catalog: Any) -> list[str]:
    try:
        table = catalog.load("evaluation_by_channel")
    except Exception:  # noqa: BLE001
        return []
    lines = ["  test N_SSIM (model | Gaussian blur | identity):"]
    for channel, rows in table.groupby("channel"):
        scores = {row.method: row.n_ssim for row in rows.itertuples()}
        values = " | ".join(f"{scores.get(m, float('nan')):.3f}" for m in ("model", "gaussian_blur", "identity"))
        lines.append(f"    {channel:<20}{values}")
    return lines


def _mlflow_run() -> str | None:
    try:
        import mlflow

        run = mlflow.active_run() or mlflow.last_active_run()
    except Exception:  # noqa: BLE001
        return None
    if run is None:
        return None
    return f"{run.info.run_id} in {mlflow.get_tracking_uri()}"
