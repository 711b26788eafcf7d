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
    InferenceSettings,
    make_backend,
    predict_file,
    predict_in_memory,
    resolve_tile,
)
from fusemycell.inference.folders import check_output_folder, select_inputs
from fusemycell.io.naming import output_name
from fusemycell.io.volume import VolumeFormatError, raw_dtype_problem
from fusemycell.models.checkpoint import TrainedModel
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
    """
    settings = inference
    location = settings.input_dir or raw_dir
    check_output_folder(location, settings.output_dir or "", raw_dir or None)
    selection = select_inputs({name: source.path for name, source in inference_inputs.items()}, location)
    backend = _backend(inference_model, settings)
    model_file = settings.model_uri or "(the model given to the node)"
    plan = PredictionPlan(
        report={
            "input": str(location),
            "model": model_file,
            "backend": settings.backend,
            "tile_zyx": list(resolve_tile(settings, inference_model.card)),
            "overlap": settings.overlap,
            "skipped_fused": selection.skipped_fused,
            "failures": [],
        }
    )
    for name in selection.predict:
        source = inference_inputs[name]
        problem = _readable(source)
        if problem is not None:
            plan.report["failures"].append({"file": name, "problem": problem})
            logger.error("%s", problem)
            continue
        plan[output_name(name, settings.output_format)] = partial(
            predict_file, source.path, backend, settings, inference_model.card
        )
    if selection.skipped_fused:
        logger.info("skipped %d fused volumes (targets, not single views)", len(selection.skipped_fused))
    logger.info(
        "predicting %d volumes of %s with %s (%s backend) into %s",
        len(plan),
        location,
        model_file,
        settings.backend,
        settings.output_dir,
    )
    return plan


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
