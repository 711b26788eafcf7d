"""After a successful run: where its artefacts and its MLflow run are, and how the model compares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from fusemycell.hooks.catalog import dataset_locations, relative
from fusemycell.hooks.parameters import ParameterHooks

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


def _nssim_lines(catalog: Any) -> list[str]:
    try:
        table = catalog.load("evaluation_by_channel")
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return []
    lines = ["  test N_SSIM (model | Gaussian blur | identity):"]
    for channel, rows in table.groupby("channel"):
        scores = {row.method: row.n_ssim for row in rows.itertuples()}
        values = " | ".join(f"{scores.get(m, float('nan')):.3f}" for m in ("model", "gaussian_blur", "identity"))
        lines.append(f"    {channel:<20}{values}")
    return lines


def _training_line(catalog: Any, training: Any) -> list[str]:
    """How training went (:func:`fusemycell.training.records.outcome`), from the history the run saved."""
    from dataclasses import fields

    from fusemycell.training.checkpoint import EpochMetrics
    from fusemycell.training.records import outcome

    try:
        table = catalog.load("training_history")
        names = [f.name for f in fields(EpochMetrics)]
        history = [EpochMetrics(**{k: v for k, v in row.items() if k in names}) for row in table.to_dict("records")]
        return [f"  {outcome(history, training.epochs, training.budget_minutes)}"]
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return []


def _mlflow_run() -> str | None:
    try:
        import mlflow

        run = mlflow.active_run() or mlflow.last_active_run()
    except Exception:  # noqa: BLE001 - a summary never fails a finished run
        return None
    if run is None:
        return None
    uri = mlflow.get_tracking_uri().split("?", 1)[0]  # the store, without its connection options (?timeout=60)
    return f"{run.info.run_id} in {uri}"


def summary_lines(
    outputs: set[str],
    catalog: Any,
    locations: dict[str, str] | None = None,
    training: Any = None,
    report: Path | None = None,
) -> list[str]:
    """One line per artefact the run wrote (``label: location``), the inference run's ``report`` file, how
    training went (epochs, optimizer steps, whether the time budget cut it short; ``training`` is the run's
    ``TrainingConfig``), the test scores, the MLflow run."""
    locations = locations if locations is not None else dataset_locations(catalog)
    lines = []
    for name, label in SUMMARY_DATASETS:
        location = relative(locations[name]) if name in outputs and name in locations else None
        if location and not Path(location).exists() and Path(f"{location}.not-exported.txt").is_file():
            location = f"not exported, see {location}.not-exported.txt"
        if location:
            lines.append(f"  {label + ':':<22}{location}")
    if report is not None:
        lines.append(f"  {'inference report:':<22}{relative(str(report))}")
    if "training_history" in outputs and training is not None:
        lines += _training_line(catalog, training)
    if "evaluation_by_channel" in outputs:
        lines += _nssim_lines(catalog)
    run = _mlflow_run()
    if run is not None:
        lines.append(f"  {'MLflow run:':<22}{run}  (browse: kedro mlflow ui)")
    return lines


class RunSummaryHooks:
    """After a successful run, print where its artefacts and its MLflow run are.

    When the run evaluated a model, the summary also gives the test N_SSIM per
    channel of the model and of both baselines.
    """

    def __init__(self, parameters: ParameterHooks | None = None) -> None:
        self.parameters = parameters

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        locations = self.parameters.locations if self.parameters is not None else None
        validated = self.parameters.parameters if self.parameters is not None else None
        training = getattr(validated, "training", None)
        run = self.parameters.inference if self.parameters is not None else None
        report = run.report_file if run is not None else None
        lines = summary_lines(set(pipeline.all_outputs()), catalog, locations, training, report)
        if lines:
            print("\nfusemycell run finished:\n" + "\n".join(lines) + "\n  lineage graph:        kedro viz run\n")
