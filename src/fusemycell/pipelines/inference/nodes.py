"""Nodes of the inference pipeline: the challenge contract, a folder of single views in, predictions out."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from fusemycell.datasets.volume_sources import VolumeSource, close
from fusemycell.inference.apply import (
    ChannelBackends,
    InferenceSettings,
    make_backend,
    predict_file,
    predict_in_memory,
    resolve_tile,
)
from fusemycell.inference.folders import check_output_folder, select_inputs
from fusemycell.inference.outside import OutsideTrainingError, check_file
from fusemycell.inference.predictor import resolve_tiling
from fusemycell.io.naming import output_name
from fusemycell.io.volume import VolumeFormatError, raw_dtype_problem
from fusemycell.models.model_file import TrainedModel
from fusemycell.parameters import Validated
from fusemycell.tracking import fetch_artifact, is_artifact_uri

logger = logging.getLogger(__name__)


class PredictionPlan(dict):
    """``{output name: callable returning the prediction}`` plus :attr:`report`: what the run used and skipped.

    The output dataset calls each callable while saving (one volume in memory at a time) and writes
    :attr:`report` into the run's report together with what it wrote and what failed.
    """

    def __init__(self, *args: Any, report: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report = dict(report or {})


def _readable(source: VolumeSource) -> str | None:
    """Why the single view of ``source`` cannot be predicted (None: it can), from its header alone."""
    try:
        volume = source()
    except VolumeFormatError as exc:
        return str(exc)
    try:
        problem = raw_dtype_problem(volume.dtype)
    finally:
        close(volume)
    return f"{source.path}: {problem}" if problem is not None else None


def plan_predictions(
    inference_inputs: Mapping[str, VolumeSource],
    inference_model: TrainedModel,
    inference: Validated[InferenceSettings],
    raw_dir: Validated[str],
) -> PredictionPlan:
    """Every readable 3D single view of the input folder (or file), to be predicted under its own name.

    ``inference`` carries the run's resolved locations (:class:`fusemycell.parameters.RunPaths`). The
    output folder must not be the input folder, the raw folder, or a folder of raw pairs. Files that
    cannot be read, are not 3D or are not of a raw voxel type (float64, signed integers) are reported
    by name and left out; the others are still predicted. ``*_fused.tif`` files (any case) are
    targets, not inputs, and are skipped. Predictions are computed while the output dataset writes them.

    Every input is checked against the model's training domain (its header and a few planes): one
    line per input outside it, in the log and under ``outside_training`` in the run's report, and
    ``inference.outside_training`` chooses what happens (predict, write the residual base, or skip it
    as a failure naming the property).
    """
    settings = inference
    location = settings.input_dir or raw_dir
    check_output_folder(location, settings.output_dir or "", raw_dir or None)
    selection = select_inputs({name: source.path for name, source in inference_inputs.items()}, location)
    backends = ChannelBackends(inference_model, settings, _backend(inference_model, settings))
    model_file = settings.model_uri or "(the model given to the node)"
    plan = PredictionPlan(
        report={
            "input": str(location),
            "model": model_file,
            "backend": settings.backend,
            **_tiling_record(inference_model, settings),
            "skipped_fused": selection.skipped_fused,
            "failures": [],
            "outside_training": _domain_summary(inference_model, settings),
        }
    )
    for name in selection.predict:
        _plan_input(plan, name, inference_inputs[name], backends, inference_model, settings)
    if selection.skipped_fused:
        logger.info("skipped %d fused volume(s) (targets, not single views)", len(selection.skipped_fused))
    logger.info(
        "predicting %d volume%s of %s with %s (%s backend) into %s",
        len(plan),
        "" if len(plan) == 1 else "s",
        location,
        model_file,
        settings.backend,
        settings.output_dir,
    )
    return plan


def _tiling_record(model: TrainedModel, settings: InferenceSettings) -> dict[str, Any]:
    """The tiling the run uses, as its report says it: blended tiles have a tile and an overlap; exact tiles
    are planned per volume (from ``inference.memory_gb``, or ``inference.tile_zyx`` when set) and never blended."""
    mode = resolve_tiling(model.card.architecture, settings)
    if mode == "blend":
        return {"tiling": mode, "tile_zyx": list(resolve_tile(settings, model.card)), "overlap": settings.overlap}
    asked = list(settings.tile_zyx) if settings.tile_zyx else None
    planned = (
        "inference.tile_zyx, halo included" if asked else f"planned per volume within memory_gb {settings.memory_gb:g}"
    )
    return {"tiling": mode, "tile_zyx": asked, "overlap": None, "tiles": planned}


def _plan_input(
    plan: PredictionPlan,
    name: str,
    source: VolumeSource,
    backends: ChannelBackends,
    model: TrainedModel,
    settings: InferenceSettings,
) -> None:
    """Add the prediction of one input to ``plan``, or its failure (unreadable, or refused outside the domain).

    An input outside the training domain is logged in one line and listed in the report.
    """
    problem = _readable(source)
    if problem is not None:
        plan.report["failures"].append({"file": name, "problem": problem})
        logger.error("%s", problem)
        return
    check = check_file(source.path, model.card, name, settings.outside_training)
    if check.outside:
        plan.report["outside_training"]["inputs"].append(check.record())
    try:
        chosen = backends(name, check)
    except OutsideTrainingError as refused:
        plan.report["failures"].append({"file": name, "problem": refused.line()})
        logger.error("%s", refused)
        return
    if check.outside:
        logger.warning("%s", check.line())
    plan[output_name(name, settings.output_format)] = partial(predict_file, source.path, chosen, settings, model.card)


def _domain_summary(model: TrainedModel, settings: InferenceSettings) -> dict[str, Any]:
    """The report's ``outside_training``: the mode, whether the model records a domain, the inputs outside it."""
    return {"mode": settings.outside_training, "checked": model.card.training_domain is not None, "inputs": []}


def _backend(model: TrainedModel, settings: InferenceSettings) -> Any:
    """The model's backend; an ONNX export kept in MLflow is fetched (ONNX Runtime reads it once, at start)."""
    if settings.backend != "onnx" or not settings.onnx_path or not is_artifact_uri(settings.onnx_path):
        return make_backend(model, settings, settings.onnx_path)
    with tempfile.TemporaryDirectory() as scratch:
        return make_backend(model, settings, fetch_artifact(settings.onnx_path, scratch))


def predict_single_view_array(
    single_view: np.ndarray, trained_model: TrainedModel, inference: Validated[InferenceSettings | Mapping[str, Any]]
) -> np.ndarray:
    """In-memory prediction of one ZYX array: the inference pipeline packaged as the MLflow model.

    In a Kedro run ``inference`` is the typed settings; the MLflow model runs this node without the
    project's hooks, with the parameters as configured (a mapping), which are checked here.
    """
    settings = inference if isinstance(inference, InferenceSettings) else InferenceSettings.model_validate(inference)
    return predict_in_memory(single_view, trained_model, settings, onnx_path=settings.onnx_path)
